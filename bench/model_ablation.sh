#!/usr/bin/env bash
# Small-scale CPU ablation of the 1.08-class model/optimizer stack on a proxy corpus.
# Usage: PROXY=/path/to/proxy8192 [VOCAB=8192] [ITERATIONS=200] [SIZE="KEY=V ..."] [VARIANTS_ORDER="old new ..."] \
#        [PRINT_ONLY=1] bench/model_ablation.sh OUTDIR [SEED...]
# (VOCAB=1024 with the sp1024 proxy: its tokenizer is PROXY/proxy_1024_bpe.model)
# Runs each variant (old default, new stack, new stack minus one feature) for each seed with a
# tiny model and writes OUTDIR/<variant>_s<seed>.txt (the trainer's log); prints one summary
# line per run (PRINT_ONLY=1: print each run's settings instead). Every variant sets each knob it
# depends on, so the runs do not change when the trainer's defaults do. Small-scale evidence only:
# absolute bpb does not carry over to FineWeb.
set -euo pipefail -f  # -f: the globs in the settings are the trainer's, not the shell's
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -lt 1 ]]; then sed -n 2,10p "$0"; exit 0; fi
OUT=$1; shift; SEEDS=("${@:-1337}")
: "${PROXY:?set PROXY to the proxy corpus directory}"
mkdir -p "$OUT"
COMMON="DATA_PATH=$PROXY TRAIN_GLOB=proxy_train_*.bin VAL_GLOB=proxy_val_*.bin TOKENIZER_PATH=$PROXY/proxy_${VOCAB:-8192}_bpe.model
 VOCAB_SIZE=${VOCAB:-8192} NUM_LAYERS=6 MODEL_DIM=128 NUM_HEADS=4 NUM_KV_HEADS=2 TRAIN_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192
 ITERATIONS=${ITERATIONS:-200} MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=0 TRAIN_LOG_EVERY=50 VAL_MAX_TOKENS=65536
 VAL_BATCH_SIZE=16384 EVAL_STRIDE=0 EMA_DECAY=0.98 QAT_MODE=off COMPILE=0 OUT_DIR=$OUT ${SIZE:-}"
# the March default's export (GPTQ, amax clip, int5 matrices, int8 embedding) for every variant
COMMON="$COMMON QUANT_METHOD=gptq QUANT_CLIP=amax QUANT_BITS_ATTN=5 QUANT_BITS_MLP=5 QUANT_BITS_EMBED=8
 ATTN_CLIP_SIGMAS=13 MLP_CLIP_SIGMAS=12 EMBED_CLIP_SIGMAS=15 TRAIN_LOADER=stream ATTN_DOC_MASK=0"
OLD_ARCH="MLP_MULT=3 MLP_ACT=relu2 XSA_LAST_N=2 QK_GAIN_INIT=1.5 BIGRAM_VOCAB_SIZE=2048 SMEAR_GATE=blend
 NUM_LOOPS=0 PARALLEL_START_LAYER=0 SKIP_GATES_ENABLED=0 SPARSE_ATTN_GATE_ENABLED=0"
OLD_OPT="MUON_ROW_NORMALIZE=0 MUON_MOMENTUM=0.99 MUON_WD=0.04 ADAM_WD=0.04 EMBED_WD=0.04
 MATRIX_LR=0.025 SCALAR_LR=0.025 TIED_EMBED_LR=0.035 WARMDOWN_ITERS=$(( ${ITERATIONS:-200} * 3 / 10 ))"
OLD="$OLD_ARCH $OLD_OPT"
NEW_ARCH="MLP_MULT=4 MLP_ACT=leaky_relu2 XSA_LAST_N=6 QK_GAIN_INIT=5 BIGRAM_VOCAB_SIZE=0 SMEAR_GATE=off
 NUM_LOOPS=1 LOOP_START=2 LOOP_END=3 ENABLE_LOOPING_AT=0.35 PARALLEL_START_LAYER=4 SKIP_GATES_ENABLED=1
 SPARSE_ATTN_GATE_ENABLED=1"
NEW_OPT="MUON_ROW_NORMALIZE=1 MUON_MOMENTUM=0.97 MUON_WD=0.095 ADAM_WD=0.02 EMBED_WD=0.085
 WARMDOWN_FRAC=0.72 MATRIX_LR=0.022 SCALAR_LR=0.02 TIED_EMBED_LR=0.03"
NEW="$NEW_ARCH $NEW_OPT"
declare -A VARIANTS=(
  [old]="$OLD"
  [new]="$NEW"
  [new_noloop]="$NEW NUM_LOOPS=0"
  [new_noparallel]="$NEW PARALLEL_START_LAYER=0"
  [new_nogates]="$NEW SKIP_GATES_ENABLED=0 SPARSE_ATTN_GATE_ENABLED=0"
  [new_nomuoneqr]="$NEW MUON_ROW_NORMALIZE=0"
  [new_oldopt]="$NEW_ARCH $OLD_OPT"                                          # new architecture, the March optimizer settings
  [old_newopt]="$OLD_ARCH $NEW_OPT"                                          # the March architecture, the new optimizer settings
  [new_shuffled]="$NEW TRAIN_LOADER=shuffled"                                # the records' shuffled-sequence loader
  [new_docmask]="$NEW ATTN_DOC_MASK=1"                                         # document-masked attention over rows
  [new_bigram_smear]="$NEW BIGRAM_VOCAB_SIZE=2048 SMEAR_GATE=blend"            # the March features back on
  [new_docpack]="$NEW ATTN_DOC_MASK=1 TRAIN_LOADER=docpack"                    # the VarLen records' packed rows
  [new_shuffled_docmask]="$NEW TRAIN_LOADER=shuffled ATTN_DOC_MASK=1"          # shuffled windows, attention inside documents
  [new_shuffled_smear]="$NEW TRAIN_LOADER=shuffled SMEAR_GATE=additive"        # the 1.0611 record's input-dependent SmearGate
  [new_shuffled_smear_docmask]="$NEW TRAIN_LOADER=shuffled SMEAR_GATE=additive ATTN_DOC_MASK=1"  # both
  [new_shuffled_blend]="$NEW TRAIN_LOADER=shuffled SMEAR_GATE=blend"           # the March per-dim SmearGate instead
  [new_shuffled_blend_docmask]="$NEW TRAIN_LOADER=shuffled SMEAR_GATE=blend ATTN_DOC_MASK=1"
)
for seed in "${SEEDS[@]}"; do
  for v in ${VARIANTS_ORDER:-old new new_noloop new_noparallel new_nogates new_nomuoneqr new_oldopt old_newopt new_shuffled new_docmask new_docpack new_shuffled_docmask new_shuffled_smear new_shuffled_smear_docmask new_shuffled_blend new_shuffled_blend_docmask new_bigram_smear}; do
    id="${v}_s${seed}"
    if [[ -n "${PRINT_ONLY:-}" ]]; then echo "$id" $COMMON ${VARIANTS[$v]} SEED=$seed; continue; fi
    env $COMMON ${VARIANTS[$v]} SEED=$seed RUN_ID=$id nice -n 10 python train_gpt.py > "$OUT/$id.console" 2>&1
    echo "$id $(grep -o 'model_params:[0-9]*' "$OUT/$id.txt") $(grep '^final_prequant_exact' "$OUT/$id.txt") | $(grep '^final_score_exact' "$OUT/$id.txt")"
  done
done
