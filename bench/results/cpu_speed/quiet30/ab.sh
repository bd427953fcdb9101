#!/bin/bash
# usage: ab.sh kind script steps out
# 30-step A/B of one script at the issue size (two threads by default: T=2), for a quick quiet-machine
# comparison: kind is ref (the 03-20 script) or ours; EXTRA="K=V ..." adds settings (e.g. COMPILE=1).
kind=$1; script=$2; steps=$3; d=$4; mkdir -p $d
refdata=${REFDATA:?proxy shards under both names, as for measure.sh}; proxy=${PROXY:?the proxy corpus directory}
size="NUM_LAYERS=4 MODEL_DIM=256 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=2 TRAIN_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192 BIGRAM_VOCAB_SIZE=2048 BIGRAM_DIM=128"
sched="ITERATIONS=$steps WARMDOWN_ITERS=10 WARMUP_STEPS=0 MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=5 EVAL_STRIDE=0"
ours="DATA_PATH=$refdata TRAIN_GLOB=proxy_train_*.bin VAL_GLOB=proxy_val_*.bin TOKENIZER_PATH=$proxy/proxy_1024_bpe.model EMA_DECAY=0.93"
if [ $kind = ref ]; then cmd="env $size $sched SEED=1337 DATA_PATH=$refdata TOKENIZER_PATH=$proxy/proxy_1024_bpe.model $EXTRA python $script"
else cmd="env $size $sched $ours SEED=1337 RUN_ID=r OVERWRITE_RUN=1 OUT_DIR=$d $EXTRA python $script"; fi
cd $d && OMP_NUM_THREADS=${T:-2} /usr/bin/time -v $cmd > stdout.txt 2> time.txt
grep -E "step:|train_time|Maximum resident" stdout.txt time.txt | tail -8
