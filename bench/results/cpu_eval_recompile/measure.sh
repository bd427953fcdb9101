#!/bin/bash
# Eval recompile measurement: the same tiny compiled run (COMPILE=1, CPU inductor, fresh
# inductor cache each time) with the script before and after fixed-shape eval + prewarm.
cd /tmp/audit && source env.sh
export TRAIN_GLOB='sotu_train_*.bin' VAL_GLOB='sotu_val_*.bin' TORCH_LOGS=recompiles
for which in before after; do
  script=/tmp/before/train_gpt.py; [ $which = after ] && script=train_gpt.py (working tree)
  export RUN_ID=$which TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
  /usr/bin/time -f "wall_s:%e" python $script > $which.log 2>&1
done
