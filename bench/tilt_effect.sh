#!/usr/bin/env bash
# Small-scale CPU measurement of the token n-gram tilt (NGRAM_TILT_ENABLED) on a proxy corpus.
# Usage: PROXY=/path/to/proxy8192 [ITERATIONS=200] [SIZE="KEY=V ..."] [EVAL="KEY=V ..."] [NICE=10] [TILTS="0 1"] \
#        bench/tilt_effect.sh OUTDIR [SEED...]
# Per seed: trains a tiny model of the default architecture once (train_s<seed>), then scores
# its artifact twice with EVAL_ONLY over the whole proxy validation split, sliding window,
# tilt off and on with the 1.0565 record's settings (order 16, threshold 0.8, boost 2.625): the
# two scores are paired on the same weights (TILTS="1": only the tilted one). A seed whose
# artifact is already in OUTDIR is not trained again. Prints one line per eval: final score, eval time,
# the tilt's precompute line. Small-scale evidence only; times taken on a shared machine are
# labelled as such by whoever reports them.
set -euo pipefail -f  # -f: the globs in the settings are the trainer's, not the shell's
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -lt 1 ]]; then sed -n 2,11p "$0"; exit 0; fi
OUT=$1; shift; SEEDS=("${@:-1337}")
: "${PROXY:?set PROXY to the proxy corpus directory}"
mkdir -p "$OUT"
MODEL="DATA_PATH=$PROXY TRAIN_GLOB=proxy_train_*.bin VAL_GLOB=proxy_val_*.bin TOKENIZER_PATH=$PROXY/proxy_8192_bpe.model
 VOCAB_SIZE=8192 NUM_LAYERS=6 MODEL_DIM=128 NUM_HEADS=4 NUM_KV_HEADS=2 TRAIN_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192
 MLP_MULT=4 MLP_ACT=leaky_relu2 XSA_LAST_N=6 QK_GAIN_INIT=5 NUM_LOOPS=1 LOOP_START=2 LOOP_END=3 PARALLEL_START_LAYER=4
 SMEAR_GATE=additive ATTN_DOC_MASK=1 SKIP_GATES_ENABLED=1 SPARSE_ATTN_GATE_ENABLED=1 BIGRAM_VOCAB_SIZE=0
 COMPILE=0 AUTOCAST=off OVERWRITE_RUN=1 OUT_DIR=$OUT ${SIZE:-}"
TRAIN="ITERATIONS=${ITERATIONS:-200} MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=0 TRAIN_LOG_EVERY=50 TRAIN_LOADER=shuffled
 EMA_DECAY=0.98 QAT_MODE=off VAL_MAX_TOKENS=65536 VAL_BATCH_SIZE=16384 EVAL_STRIDE=0"
SCORE="EVAL_STRIDE=64 EVAL_BATCH_SEQS=32 TOKEN_ORDER=16 TOKEN_THRESHOLD=0.8 TOKEN_BOOST=2.625 ${EVAL:-}"
for seed in "${SEEDS[@]}"; do
  id="train_s$seed"
  art=$(find "$OUT" -maxdepth 1 -name "$id.int*" | head -1)
  if [[ -z "$art" ]]; then  # a seed already trained in OUTDIR is only scored again
    env $MODEL $TRAIN SEED=$seed RUN_ID=$id nice -n "${NICE:-10}" python train_gpt.py > "$OUT/$id.console" 2>&1
    art=$(find "$OUT" -maxdepth 1 -name "$id.int*" | head -1)
  fi
  for tilt in ${TILTS:-0 1}; do
    eid="eval_tilt${tilt}_s$seed"
    env $MODEL $SCORE SEED=$seed NGRAM_TILT_ENABLED=$tilt EVAL_ONLY="$art" RUN_ID=$eid nice -n "${NICE:-10}" python train_gpt.py > "$OUT/$eid.console" 2>&1
    echo "$eid $(grep '^final_score_exact' "$OUT/$eid.txt") | $(grep -o 'eval_time_total_ms:[0-9][0-9]*' "$OUT/$eid.txt" | tail -1) | $(grep '^ngram_tilt:precompute_done' "$OUT/$eid.txt" || true)"
  done
done
