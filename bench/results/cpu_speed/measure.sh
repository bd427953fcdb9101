#!/usr/bin/env bash
# CPU speed series: ours before/after against the 2026-03-20 10L record's script (patched to run
# on CPU), same model size, same proxy data, 300 steps.
#   THREADS=2 PARALLEL=0 STEPS=300 WARMDOWN=100 WARMUP=20 BEFORE_SEEDS=all bash measure.sh OUT_DIR OURS_AFTER.py OURS_BEFORE.py REF_CPU.py REF_DATA_DIR PROXY_DIR SEEDS...
# REF_DATA_DIR holds the proxy shards under both names, proxy_{train,val}_*.bin and
# fineweb_{train,val}_*.bin (the reference script hard-codes the latter); both scripts read it.
# WARMUP: untimed warmup steps of every script (20 is both scripts' default; ours compiles its
# graphs there). BEFORE_SEEDS=first runs "before" for the first seed only (the slowest run).
# KINDS: the runs per seed, in order (default "after ref before").
# PARALLEL=1 starts every run at once (each sees the same machine load: the fair choice on a
# shared, busy machine); PARALLEL=0 runs them back to back. Each run: /usr/bin/time -v (peak RSS).
set -u
out=$1; after=$2; before=$3; ref=$4; refdata=$5; proxy=$6; shift 6
threads=${THREADS:-2}; parallel=${PARALLEL:-0}; steps=${STEPS:-300}; warmdown=${WARMDOWN:-100}
warmup=${WARMUP:-20}; before_seeds=${BEFORE_SEEDS:-all}; kinds=${KINDS:-after ref before}
unset THREADS PARALLEL STEPS WARMDOWN WARMUP BEFORE_SEEDS KINDS  # the trainer refuses WARMDOWN (a records' name) in its environment
mkdir -p "$out"
size="NUM_LAYERS=4 MODEL_DIM=256 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=2 TRAIN_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192 BIGRAM_VOCAB_SIZE=2048 BIGRAM_DIM=128"
sched="ITERATIONS=$steps WARMDOWN_ITERS=$warmdown WARMUP_STEPS=$warmup MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=50 EVAL_STRIDE=0"
ours="DATA_PATH=$refdata TRAIN_GLOB=proxy_train_*.bin VAL_GLOB=proxy_val_*.bin TOKENIZER_PATH=$proxy/proxy_1024_bpe.model EMA_DECAY=0.93"
one() {  # kind seed
  local kind=$1 seed=$2 d="$out/$1-s$2" cmd
  mkdir -p "$d"
  case $kind in
    ref) cmd="env $size $sched SEED=$seed DATA_PATH=$refdata TOKENIZER_PATH=$proxy/proxy_1024_bpe.model python $ref";;
    after) cmd="env $size $sched $ours SEED=$seed RUN_ID=$kind-s$seed OUT_DIR=$d python $after";;
    before) cmd="env $size $sched $ours SEED=$seed RUN_ID=$kind-s$seed OUT_DIR=$d python $before";;
  esac
  echo "$(date -u +%FT%TZ) start $kind seed $seed threads $threads load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/series.txt"
  (cd "$d" && OMP_NUM_THREADS=$threads /usr/bin/time -v $cmd > stdout.txt 2> time.txt)
  echo "$(date -u +%FT%TZ) end $kind seed $seed rc $? load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/series.txt"
  rm -f "$d"/*.pt "$d"/*.ptz "$d"/*_zstd22 "$d"/*.int*
}
first=$1
for seed in "$@"; do
  for kind in $kinds; do
    [ "$kind" = before ] && [ "$before_seeds" = first ] && [ "$seed" != "$first" ] && continue
    if [ "$parallel" = 1 ]; then one $kind $seed & else one $kind $seed; fi
  done
done
wait
