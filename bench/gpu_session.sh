#!/usr/bin/env bash
# The GPU measurements on one H100/H200, in steps that each fit one 10-minute
# device command. The device machine has no internet, so the data travels with the working
# tree: copy the SP8192 proxy corpus (the default model's vocabulary) into the ignored .carry/
# folder first (see bench/README.md, "GPU measurement"), and name .carry in the device call's
# carry list.
#
#   bash bench/gpu_session.sh first    # the first lent GPU, one command under 8 minutes: versions and
#                                      # backends (DRY_RUN says which attention runs and projects
#                                      # memory), 200 steps of the default at the per-GPU batch with the
#                                      # loop switch at step 100 (ms/step before/after, peak memory),
#                                      # GPTQ time, then sliding + TTT eval of that artifact on an eighth
#                                      # of one rank's share (FIRST_EVAL_TOKENS); each step's failure is
#                                      # logged and the script goes on; everything under $OUT/first/
#   bash bench/gpu_session.sh frontier # the default model (SP8192, loop 3-5 x2, document masks) at
#                                      # the per-GPU batch of an 8-GPU run, the loop switching on at
#                                      # step 100 of 200: ms/step before and after the switch (the
#                                      # 1.0611 record: about 96 and 144 ms on 8xH100), peak memory,
#                                      # GPTQ time
#   bash bench/gpu_session.sh nomask   # frontier with ATTN_DOC_MASK=0: what the document mask
#                                      # costs or saves (FA3 varlen, else SDPA with a dense mask)
#   bash bench/gpu_session.sh train    # the default model, full 8-GPU-equivalent batch: ms/step,
#                                      # tokens/s, MFU, peak memory, compile, export and
#                                      # sliding-eval time over one rank's share of FineWeb val
#   bash bench/gpu_session.sh profile  # per-phase CUDA profile of the step + recompile log
#   bash bench/gpu_session.sh docpack  # frontier with TRAIN_LOADER=docpack (FA3 varlen when
#                                      # flash_attn_interface imports): the VarLen records' path
#   bash bench/gpu_session.sh ttt      # a 40-step default model, then the phased TTT eval (the
#                                      # 1.0611 record's protocol, TTT_ENABLED=1) over one rank's
#                                      # share of FineWeb val: prewarm and eval time vs the budget
#
# `train` also times GPTQ (gptq_calibration ... calibration_time, gptq ... quant_time).
#
# Results go to $OUT (the device tool brings that folder back), else bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
SRC=${PROXY_SRC:-.carry/proxy8192}
DATA=/tmp/proxy_rank_val
export PYTHONUNBUFFERED=1

[ -f "$SRC/proxy_8192_bpe.model" ] || { echo "error: $SRC/proxy_8192_bpe.model missing: copy ../shared/proxy8192 into $SRC first" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu_info.txt"

# One rank's share of FineWeb's validation split (62,021,632 / 8 tokens), made of the proxy's
# validation documents repeated: the sliding eval is timed on exactly the work each of 8 GPUs does.
[ -d "$DATA" ] || python bench/make_val_split.py --src "$SRC" --tokens 7752704 --out "$DATA"
DATA_ENV="DATA_PATH=$DATA,TRAIN_GLOB=proxy_train_*.bin,VAL_GLOB=proxy_val_*.bin,TOKENIZER_PATH=$DATA/proxy_8192_bpe.model"

case "${1:-}" in
  first)
    # No `set -e` from here: every step runs under its own timeout, its exit code goes to
    # steps.txt, and a failed step leaves the later ones running.
    set +e +o pipefail
    F="$OUT/first"; mkdir -p "$F"
    step() {  # step NAME SECONDS COMMAND...: run, log output and exit code, never stop the script
      local name=$1 secs=$2; shift 2; local t0=$SECONDS
      timeout "$secs" "$@" > "$F/$name.log" 2>&1; local rc=$?
      echo "$name rc:$rc seconds:$((SECONDS - t0))" | tee -a "$F/steps.txt"
    }
    step versions 30 python -c "
import importlib.util, torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for m in ('triton', 'flash_attn_interface', 'torch.nn.attention.flex_attention'):
    try:
        mod = importlib.import_module(m); print(m, 'imports', getattr(mod, '__version__', ''))
    except Exception as e:
        print(m, 'does not import:', type(e).__name__, e)
" ; cat "$F/versions.log"
    step dry_run 90 env $(echo "$DATA_ENV" | tr , ' ') DRY_RUN=1 python train_gpt.py
    grep -E "attn_backend|peak_memory|memory" "$F/dry_run.log"
    # 200 steps of the default at the per-GPU batch (8 micro-batches of 48 x 2048 on one GPU, i.e.
    # the 8-GPU step x8), the loop switching on at step 100; then GPTQ export and the roundtrip eval.
    step train 290 env $(echo "$DATA_ENV" | tr , ' ') ITERATIONS=200 ENABLE_LOOPING_AT=0.5 MAX_WALLCLOCK_SECONDS=0 \
      TRAIN_LOG_EVERY=10 VAL_LOSS_EVERY=0 EVAL_STRIDE=0 RUN_ID=first OUT_DIR="$F" OVERWRITE_RUN=1 python train_gpt.py
    grep -E "^step:(100|110|200)/|looping_start|peak_memory|gptq|quant_time|attn_backend|compile" "$F/train.log" | grep -v '^config:'
    # Sliding + TTT eval of that artifact on FIRST_EVAL_TOKENS of one rank's share (default an eighth:
    # the full share takes about 8x the eval lines' times).
    ART=$(ls "$F"/first.int* 2>/dev/null | head -1)
    step eval 100 env $(echo "$DATA_ENV" | tr , ' ') EVAL_ONLY="$ART" TTT_ENABLED=1 TTT_WITH_SLIDING=1 \
      VAL_MAX_TOKENS=${FIRST_EVAL_TOKENS:-969088} RUN_ID=first_eval OUT_DIR="$F" OVERWRITE_RUN=1 python train_gpt.py
    grep -E "^final_|eval_time|prewarm|ttt_budget" "$F/eval.log"
    cat "$F/steps.txt"
    ;;
  train)
    # 150 steps of the default model with the full 786,432-token batch: 8 micro-batches of 48 x 2048,
    # the per-GPU shapes of an 8-GPU run (so ms/step / 8 compares with 8xH100 figures).
    python bench/benchmark.py --steps 150 --seeds 1337 --timeout 570 --overwrite \
      --env "$DATA_ENV,TRAIN_LOG_EVERY=10,VAL_LOSS_EVERY=0" \
      --config full_batch:TRAIN_BATCH_TOKENS=786432 \
      --out "$OUT/gpu_train" 2>&1 | tee "$OUT/gpu_train.log"
    ;;
  profile)
    # CUDA profile of 3 steps (phases, top kernels, host syncs), with every recompile logged.
    TORCH_LOGS=recompiles python bench/profile_step.py --steps 3 --row-limit 30 \
      --env "$DATA_ENV,WARMUP_STEPS=3,TRAIN_BATCH_TOKENS=786432" 2>&1 | tee "$OUT/gpu_profile.log"
    ;;
  frontier|nomask|docpack)
    # 200 steps, the loop switching on at step 100: the step lines before and after give the two
    # step times (the 1.0611 record: about 96 and 144 ms/step on 8xH100, i.e. x8 here).
    EXTRA=""; [ "$1" = docpack ] && EXTRA="TRAIN_LOADER=docpack"; [ "$1" = nomask ] && EXTRA="ATTN_DOC_MASK=0"
    env $(echo "$DATA_ENV" | tr , ' ') $EXTRA ITERATIONS=200 ENABLE_LOOPING_AT=0.5 MAX_WALLCLOCK_SECONDS=0 \
      TRAIN_LOG_EVERY=10 VAL_LOSS_EVERY=0 EVAL_STRIDE=0 RUN_ID=gpu_$1 OUT_DIR="$OUT" OVERWRITE_RUN=1 \
      timeout 570 python train_gpt.py 2>&1 | grep -v '^config:' | tee "$OUT/gpu_$1.log"
    ;;
  ttt)
    # The eval budget is cut to 420 s so the whole command fits one 10-minute call; the log's
    # ttt_budget lines say whether the projection dropped phases or adaptation to stay inside.
    env $(echo "$DATA_ENV" | tr , ' ') ITERATIONS=40 MAX_WALLCLOCK_SECONDS=0 TRAIN_LOG_EVERY=10 VAL_LOSS_EVERY=0 \
      TTT_ENABLED=1 EVAL_BUDGET_SECONDS=420 RUN_ID=gpu_ttt OUT_DIR="$OUT" OVERWRITE_RUN=1 \
      timeout 580 python train_gpt.py 2>&1 | grep -v '^config:' | tee "$OUT/gpu_ttt.log"
    ;;
  *)
    echo "usage: bash bench/gpu_session.sh first|frontier|nomask|train|profile|docpack|ttt" >&2; exit 2 ;;
esac
