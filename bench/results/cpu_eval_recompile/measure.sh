#!/bin/bash
# Eval recompile measurement: the same tiny compiled run (COMPILE=1, CPU inductor, fresh
# inductor cache each time) with two versions of the script, logging every recompile.
#   bash bench/results/cpu_eval_recompile/measure.sh BEFORE_train_gpt.py AFTER_train_gpt.py
# (before = git show 41c56be:train_gpt.py, after = f8e12ba's; outputs before.log, after.log)
set -e
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"   # tiny model on data/sample, COMPILE=1, VAL_LOSS_EVERY=10, EVAL_STRIDE=64
export TRAIN_GLOB='sotu_train_*.bin' VAL_GLOB='sotu_val_*.bin' TORCH_LOGS=recompiles OUT_DIR=$(mktemp -d)
for which in before after; do
  script=$1; [ $which = after ] && script=$2
  export RUN_ID=$which TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
  /usr/bin/time -f "wall_s:%e" python "$script" > "$which.log" 2>&1
done
