#!/usr/bin/env bash
# Re-score a model_ablation.sh run's artifact with document-masked attention on or off at eval.
# Usage: PROXY=/path/to/proxy8192 [VOCAB=8192] [ITERATIONS=150] [SIZE="KEY=V ..."] \
#        bench/model_cross_eval.sh ARTDIR OUTDIR VARIANT SEED MASK
# ARTDIR holds the run's artifact <VARIANT>_s<SEED>.<format> (model_ablation.sh leaves it in its
# OUTDIR); MASK is ATTN_DOC_MASK's value for the eval (0 or 1). The model
# settings are the variant's own (model_ablation.sh PRINT_ONLY=1), so with the same ITERATIONS
# and SIZE the artifact loads strictly. Writes OUTDIR/<VARIANT>_s<SEED>_evalmask<MASK>.txt and
# prints its final_score_exact line. Small-scale evidence only.
set -euo pipefail -f
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -ne 5 ]]; then sed -n 2,9p "$0"; exit 0; fi
ART=$1; OUT=$2; VARIANT=$3; SEED=$4; MASK=$5
here=$(cd "$(dirname "$0")" && pwd)
line=$(PRINT_ONLY=1 "$here/model_ablation.sh" "$OUT" "$SEED" | grep "^${VARIANT}_s${SEED} " || true)
[[ -n "$line" ]] || { echo "model_ablation.sh has no variant $VARIANT" >&2; exit 2; }
set +f
arts=("$ART/${VARIANT}_s${SEED}".int*)
set -f
[[ -f "${arts[0]}" ]] || { echo "no artifact $ART/${VARIANT}_s${SEED}.int*" >&2; exit 2; }
id="${VARIANT}_s${SEED}_evalmask${MASK}"
mkdir -p "$OUT"
env ${line#* } OUT_DIR="$OUT" ATTN_DOC_MASK="$MASK" EVAL_ONLY="${arts[0]}" RUN_ID="$id" \
    python "$here/../train_gpt.py" > "$OUT/$id.console" 2>&1
echo "$VARIANT s$SEED eval ATTN_DOC_MASK=$MASK $(grep '^final_score_exact' "$OUT/$id.txt")"
