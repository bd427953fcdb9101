#!/bin/bash
# Regenerates bench/results/quantization: train the proxy models, then sweep export variants on their raw weights.
# PROXY=<proxy corpus dir (sp1024 shards + proxy_1024_bpe.model)>; OUT=<scratch dir>; run from the repo root.
# The models were trained with train_gpt.py at commit aca7ad9 (seeds 1337 and 42; seed 7 was not run), the
# sweeps ran with this branch's train_gpt.py. Every variant names its QUANT_METHOD and the frames are zstd-22
# (EXPORT_COMPRESSOR=zstd), the defaults when sweeps 1-3 ran, so the numbers regenerate under later defaults.
set -e
: "${OLD:=train_gpt_aca7ad9.py}" "${NEW:=train_gpt.py}" "${PROXY8192:=$PROXY/../proxy8192}"
for SEED in 1337 42; do
env -i PATH=$PATH HOME=$HOME OMP_NUM_THREADS=1 \
 DATA_PATH=$PROXY TRAIN_GLOB='proxy_train_*.bin' VAL_GLOB='proxy_val_*.bin' \
 TOKENIZER_PATH=$PROXY/proxy_1024_bpe.model VOCAB_SIZE=1024 \
 NUM_LAYERS=4 MODEL_DIM=128 NUM_HEADS=4 NUM_KV_HEADS=2 ROPE_DIMS=8 XSA_LAST_N=2 BIGRAM_DIM=64 \
 TRAIN_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192 ITERATIONS=250 WARMDOWN_ITERS=80 WARMUP_STEPS=2 \
 MUON_MOMENTUM_WARMUP_STEPS=50 MAX_WALLCLOCK_SECONDS=0 TRAIN_LOG_EVERY=50 \
 VAL_MAX_TOKENS=131072 VAL_BATCH_SIZE=32768 EVAL_STRIDE=0 QAT_MODE=off EMA_ENABLED=0 \
 SEED=$SEED RUN_ID=p1024_s$SEED OUT_DIR=$OUT \
 nice -n 10 python train_gpt.py > $OUT/p1024_s$SEED.out 2>&1
done

# --- sweep RUN (RUN = p1024_s1337 for sweep..sweep4, p1024_s42 for sweep5)
sweep() {
# usage: sweep.sh RUN_NAME  (e.g. p1024_s1337) -- export variants on a run's raw weights
local R=$1
V=(
 "rtn_amax_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=amax"
 "gptqlite_search_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=search"
 "gptq_search_m5_e8:QUANT_METHOD=gptq,QUANT_CLIP=search"
 "gptq_sdclip_m5_e8:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=5,EMBED_BITS=8"
 "gptq_sdclip_m5_e8_lqer:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=5,EMBED_BITS=8,LQER_ENABLED=1"
 "rtn_sdclip_m6_e7:QUANT_METHOD=rtn,QUANT_CLIP=sdclip,MATRIX_BITS=6,EMBED_BITS=7"
 "gptq_sdclip_m6_e6:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=6,EMBED_BITS=6"
 "gptq_sdclip_m6_e7:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=6,EMBED_BITS=7"
 "gptq_sdclip_m6_e8:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=6,EMBED_BITS=8"
 "gptq_sdclip_m6_e7_lqer:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=6,EMBED_BITS=7,LQER_ENABLED=1"
)
ARGS=()
for v in "${V[@]}"; do ARGS+=(--variant "$v"); done
env OMP_NUM_THREADS=1 nice -n 10 python bench/artifact_report.py sweep $OUT/$R.txt --weights $OUT/$R.raw.pt \
  --prequant --set VAL_MAX_TOKENS=65536 --set EXPORT_COMPRESSOR=zstd "${ARGS[@]}" --out $OUT/sweep_$R.json
}

# --- sweep2 RUN (RUN = p1024_s1337 for sweep..sweep4, p1024_s42 for sweep5)
sweep2() {
# usage: sweep2.sh RUN_NAME -- SDClip k variants (finer grids) on a run's raw weights
local R=$1
G="QUANT_METHOD=gptq,QUANT_CLIP=sdclip"
V=(
 "gptq_search_m6_e8:QUANT_METHOD=gptq,QUANT_CLIP=search,MATRIX_BITS=6"
 "gptq_sdclip_m5k4_e8k8:$G,MATRIX_BITS=5,ATTN_CLIP_SIGMAS=4,MLP_CLIP_SIGMAS=4,EMBED_BITS=8,EMBED_CLIP_SIGMAS=8"
 "gptq_sdclip_m6k6_e8k8:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=6,MLP_CLIP_SIGMAS=6,EMBED_BITS=8,EMBED_CLIP_SIGMAS=8"
 "gptq_sdclip_m6k8_e8k10:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=8,MLP_CLIP_SIGMAS=8,EMBED_BITS=8,EMBED_CLIP_SIGMAS=10"
 "gptq_sdclip_m6k6_e7k8:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=6,MLP_CLIP_SIGMAS=6,EMBED_BITS=7,EMBED_CLIP_SIGMAS=8"
 "gptq_sdclip_m6k6_e8k8_lqer:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=6,MLP_CLIP_SIGMAS=6,EMBED_BITS=8,EMBED_CLIP_SIGMAS=8,LQER_ENABLED=1"
)
ARGS=()
for v in "${V[@]}"; do ARGS+=(--variant "$v"); done
env OMP_NUM_THREADS=1 nice -n 10 python bench/artifact_report.py sweep $OUT/$R.txt --weights $OUT/$R.raw.pt \
  --prequant --set VAL_MAX_TOKENS=65536 --set EXPORT_COMPRESSOR=zstd "${ARGS[@]}" --out $OUT/sweep2_$R.json
}

# --- sweep3 RUN (RUN = p1024_s1337 for sweep..sweep4, p1024_s42 for sweep5)
sweep3() {
local R=$1
G="QUANT_METHOD=gptq,QUANT_CLIP=sdclip"
V=(
 "gptq_amax_m5_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax"
 "gptq_search_m5_e8_lqer:QUANT_METHOD=gptq,QUANT_CLIP=search,LQER_ENABLED=1"
 "gptq_sdclip_m6k4_e8k5:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=4,MLP_CLIP_SIGMAS=4,EMBED_BITS=8,EMBED_CLIP_SIGMAS=5"
 "gptq_sdclip_m5k3_e8k5:$G,MATRIX_BITS=5,ATTN_CLIP_SIGMAS=3,MLP_CLIP_SIGMAS=3,EMBED_BITS=8,EMBED_CLIP_SIGMAS=5"
)
ARGS=()
for v in "${V[@]}"; do ARGS+=(--variant "$v"); done
env OMP_NUM_THREADS=1 nice -n 10 python bench/artifact_report.py sweep $OUT/$R.txt --weights $OUT/$R.raw.pt \
  --prequant --set VAL_MAX_TOKENS=65536 --set EXPORT_COMPRESSOR=zstd "${ARGS[@]}" --out $OUT/sweep3_$R.json
}

# --- sweep4 RUN (RUN = p1024_s1337 for sweep..sweep4, p1024_s42 for sweep5)
sweep4() {
local R=$1
V=(
 "gptq_amax_m5_e8_lqer:QUANT_METHOD=gptq,QUANT_CLIP=amax,LQER_ENABLED=1"
 "gptq_amax_m5_e7:QUANT_METHOD=gptq,QUANT_CLIP=amax,EMBED_BITS=7"
 "gptq_amax_m5_e6:QUANT_METHOD=gptq,QUANT_CLIP=amax,EMBED_BITS=6"
 "gptq_amax_m6_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax,MATRIX_BITS=6"
)
ARGS=()
for v in "${V[@]}"; do ARGS+=(--variant "$v"); done
env OMP_NUM_THREADS=1 nice -n 10 python bench/artifact_report.py sweep $OUT/$R.txt --weights $OUT/$R.raw.pt \
  --prequant --set VAL_MAX_TOKENS=65536 --set EXPORT_COMPRESSOR=zstd "${ARGS[@]}" --out $OUT/sweep4_$R.json
}

# --- sweep5 RUN (RUN = p1024_s1337 for sweep..sweep4, p1024_s42 for sweep5)
sweep5() {
# the key comparison set for a further seed (every method and clip named explicitly)
local R=$1
G="QUANT_METHOD=gptq,QUANT_CLIP=sdclip"
V=(
 "rtn_amax_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=amax"
 "gptqlite_search_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=search"
 "gptq_amax_m5_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax"
 "gptq_amax_m5_e8_lqer:QUANT_METHOD=gptq,QUANT_CLIP=amax,LQER_ENABLED=1"
 "gptq_amax_m5_e7:QUANT_METHOD=gptq,QUANT_CLIP=amax,EMBED_BITS=7"
 "gptq_sdclip_m5_e8:$G,MATRIX_BITS=5,EMBED_BITS=8"
 "gptq_sdclip_m6_e7:$G,MATRIX_BITS=6,EMBED_BITS=7"
 "gptq_sdclip_m6_e8:$G,MATRIX_BITS=6,EMBED_BITS=8"
)
ARGS=()
for v in "${V[@]}"; do ARGS+=(--variant "$v"); done
env OMP_NUM_THREADS=1 nice -n 10 python bench/artifact_report.py sweep $OUT/$R.txt --weights $OUT/$R.raw.pt \
  --prequant --set VAL_MAX_TOKENS=65536 --set EXPORT_COMPRESSOR=zstd "${ARGS[@]}" --out $OUT/sweep5_$R.json
}

# --- compressor tables (seed 1337): the default grid at the time, and GPTQ on the amax grid
compressor_tables() {
python bench/compressors.py $OUT/p1024_s1337.txt --weights $OUT/p1024_s1337.raw.pt --set QUANT_METHOD=rtn \
  --out bench/results/quantization/compressors_sp1024_s1337_rtn_search_int5.json
python bench/compressors.py $OUT/p1024_s1337.txt --weights $OUT/p1024_s1337.raw.pt --set QUANT_METHOD=gptq --set QUANT_CLIP=amax \
  --out bench/results/quantization/compressors_sp1024_s1337_gptq_amax_int5.json
}

# ---------------------------------------------------------------------------------------------
# Third seed (7), the SP8192 proxy (3 seeds), late QAT on top of GPTQ, and the int6/int7-matrix and
# HESSIAN_CLIP_LAMBDA sweeps. OLD = train_gpt.py at aca7ad9 (what seeds 1337/42 above were trained with),
# NEW = train_gpt.py at the commit that added these results; PROXY8192 = the SP8192 proxy corpus.
# Each job_* is one job; they ran two at a time:  printf '%s\n' "job_p8192 1337" ... | xargs -P 2 -I{} bash -c '{}'
QSIZE="NUM_LAYERS=4 MODEL_DIM=128 NUM_HEADS=4 NUM_KV_HEADS=2 ROPE_DIMS=8 XSA_LAST_N=2 BIGRAM_DIM=64
 TRAIN_SEQ_LEN=256 TRAIN_BATCH_TOKENS=8192 ITERATIONS=250 WARMDOWN_ITERS=80 WARMUP_STEPS=2
 MUON_MOMENTUM_WARMUP_STEPS=50 MAX_WALLCLOCK_SECONDS=0 TRAIN_LOG_EVERY=50
 VAL_MAX_TOKENS=131072 VAL_BATCH_SIZE=32768 EVAL_STRIDE=0 EMA_ENABLED=0"
qtrain() {  # script id data tokenizer vocab seed extra...
  local script=$1 id=$2 data=$3 tok=$4 vocab=$5 seed=$6; shift 6
  [ -f $OUT/$id.raw.pt ] && return 0
  env -i PATH=$PATH HOME=$HOME OMP_NUM_THREADS=1 DATA_PATH=$data TRAIN_GLOB='proxy_train_*.bin' VAL_GLOB='proxy_val_*.bin' \
    TOKENIZER_PATH=$data/$tok VOCAB_SIZE=$vocab $QSIZE SEED=$seed RUN_ID=$id OUT_DIR=$OUT "$@" \
    python $script > $OUT/$id.out 2>&1
}
G="QUANT_METHOD=gptq,QUANT_CLIP=sdclip"
KEY=(
 "rtn_amax_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=amax"
 "gptqlite_search_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=search"
 "gptq_amax_m5_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax"
 "gptq_amax_m5_e8_lqer:QUANT_METHOD=gptq,QUANT_CLIP=amax,LQER_ENABLED=1"
 "gptq_amax_m5_e7:QUANT_METHOD=gptq,QUANT_CLIP=amax,EMBED_BITS=7"
 "gptq_sdclip_m5_e8:$G,MATRIX_BITS=5,EMBED_BITS=8"
 "gptq_sdclip_m6_e7:$G,MATRIX_BITS=6,EMBED_BITS=7"
 "gptq_sdclip_m6_e8:$G,MATRIX_BITS=6,EMBED_BITS=8"
)
EXTRA=(  # int6/int7 matrices, and Hessian-aware SDClip (lambda) at the best SDClip point found on seed 1337
 "gptq_amax_m6_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax,MATRIX_BITS=6,EMBED_BITS=8"
 "gptq_amax_m7_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax,MATRIX_BITS=7,EMBED_BITS=8"
 "gptq_amax_m7_e7:QUANT_METHOD=gptq,QUANT_CLIP=amax,MATRIX_BITS=7,EMBED_BITS=7"
 "gptq_sdclip_m6k4_e8k5:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=4,MLP_CLIP_SIGMAS=4,EMBED_BITS=8,EMBED_CLIP_SIGMAS=5"
 "gptq_sdclip_m6k4_e8k5_l0.5:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=4,MLP_CLIP_SIGMAS=4,EMBED_BITS=8,EMBED_CLIP_SIGMAS=5,HESSIAN_CLIP_LAMBDA=0.5"
 "gptq_sdclip_m6k4_e8k5_l1:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=4,MLP_CLIP_SIGMAS=4,EMBED_BITS=8,EMBED_CLIP_SIGMAS=5,HESSIAN_CLIP_LAMBDA=1"
 "gptq_sdclip_m6k4_e8k5_l2:$G,MATRIX_BITS=6,ATTN_CLIP_SIGMAS=4,MLP_CLIP_SIGMAS=4,EMBED_BITS=8,EMBED_CLIP_SIGMAS=5,HESSIAN_CLIP_LAMBDA=2"
)
QATSET=(
 "rtn_amax_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=amax"
 "gptqlite_search_m5_e8:QUANT_METHOD=rtn,QUANT_CLIP=search"
 "gptq_amax_m5_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax"
 "gptq_amax_m6_e8:QUANT_METHOD=gptq,QUANT_CLIP=amax,MATRIX_BITS=6,EMBED_BITS=8"
)
qsweep() {  # name run variants...
  local name=$1 run=$2; shift 2
  [ -f $OUT/${name}_$run.json ] && return 0
  local args=(); for v in "$@"; do args+=(--variant "$v"); done
  python bench/artifact_report.py sweep $OUT/$run.txt --weights $OUT/$run.raw.pt --prequant \
    --set VAL_MAX_TOKENS=65536 --set EXPORT_COMPRESSOR=zstd --set COMPILE=0 "${args[@]}" --out $OUT/${name}_$run.json > $OUT/${name}_$run.out 2>&1
}
job_p1024_s7() { qtrain $OLD p1024_s7 $PROXY proxy_1024_bpe.model 1024 7 QAT_MODE=off; qsweep sweep6 p1024_s7 "${KEY[@]}" "${EXTRA[@]}"; }
job_p1024_old_extra() { qsweep sweep6x p1024_s1337 "${EXTRA[@]}"; qsweep sweep6x p1024_s42 "${EXTRA[@]}"; }
job_p8192() { qtrain $NEW p8192_s$1 $PROXY8192 proxy_8192_bpe.model 8192 $1 QAT_MODE=off AUTOCAST=off COMPILE=0; qsweep sweep6 p8192_s$1 "${KEY[@]}" "${EXTRA[@]}"; }
job_qat() {  # seed mode(off|late)
  qtrain $NEW p1024qat$2_s$1 $PROXY proxy_1024_bpe.model 1024 $1 QAT_MODE=$2 AUTOCAST=off COMPILE=0
  qsweep sweepqat p1024qat$2_s$1 "${QATSET[@]}"
}

# --- int6 embedding on the remaining seeds and SP8192 (sweep7), and the SP8192 compressor table
E6=("gptq_amax_m5_e6:QUANT_METHOD=gptq,QUANT_CLIP=amax,EMBED_BITS=6" "gptq_sdclip_m6_e6:QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=6,EMBED_BITS=6")
sweep7() { for r in p1024_s42 p1024_s7 p8192_s1337 p8192_s42 p8192_s7; do qsweep sweep7 $r "${E6[@]}"; done; }
compressors_sp8192() {
python bench/compressors.py $OUT/p8192_s1337.txt --weights $OUT/p8192_s1337.raw.pt --set QUANT_METHOD=gptq --set QUANT_CLIP=amax \
  --set COMPILE=0 --out bench/results/quantization/compressors_sp8192_s1337_gptq_amax_int5.json
}

# --- SDClip points that fit the SP8192 default (sweep8), on the three SP8192 proxy models
G6="QUANT_METHOD=gptq,QUANT_CLIP=sdclip,MATRIX_BITS=6"
SD8=("r0405_m12.85_e8k20:$G6,ATTN_CLIP_SIGMAS=0,MLP_CLIP_SIGMAS=0,EMBED_BITS=8,EMBED_CLIP_SIGMAS=20"
     "r0414_a13m12_e7k15:$G6,ATTN_CLIP_SIGMAS=13,MLP_CLIP_SIGMAS=12,EMBED_BITS=7,EMBED_CLIP_SIGMAS=15"
     "C_m12.85_e7k20:$G6,ATTN_CLIP_SIGMAS=0,MLP_CLIP_SIGMAS=0,EMBED_BITS=7,EMBED_CLIP_SIGMAS=20"
     "F_m14_e8k20:$G6,ATTN_CLIP_SIGMAS=14,MLP_CLIP_SIGMAS=14,EMBED_BITS=8,EMBED_CLIP_SIGMAS=20"
     "A_m13_e7k17:$G6,ATTN_CLIP_SIGMAS=13,MLP_CLIP_SIGMAS=13,EMBED_BITS=7,EMBED_CLIP_SIGMAS=17")
sweep8() {  # brotli (the default compressor), unlike the zstd sweeps above
  for s in 1337 42 7; do
    local args=(); for v in "${SD8[@]}"; do args+=(--variant "$v"); done
    OMP_NUM_THREADS=1 python bench/artifact_report.py sweep $OUT/p8192_s$s.txt --weights $OUT/p8192_s$s.raw.pt --prequant \
      --set VAL_MAX_TOKENS=65536 --set COMPILE=0 "${args[@]}" --out $OUT/sweep8_p8192_s$s.json
  done
}
# full-model bytes of each point: DRY_RUN=1 ATTN_CLIP_SIGMAS=.. MLP_CLIP_SIGMAS=.. QUANT_BITS_EMBED=.. EMBED_CLIP_SIGMAS=.. python train_gpt.py
