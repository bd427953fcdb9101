#!/usr/bin/env bash
# Time the README's quick start (configs/cpu_sample.env) end to end, eager and compiled, back to
# back on the same machine: wall time from start to score, and the log's phase times.
# Usage (from the repository root): bash bench/quickstart_timing.sh [OUT_DIR]
set -u
OUT=${1:-/tmp/quickstart_timing}
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg)"
for mode in 0 1; do
  start=$(date +%s.%N)
  env $(cat configs/cpu_sample.env) COMPILE=$mode RUN_ID=qs_compile$mode OUT_DIR="$OUT" OVERWRITE_RUN=1 \
    python train_gpt.py > "$OUT/qs_compile$mode.out" 2>&1
  rc=$?
  end=$(date +%s.%N)
  log="$OUT/qs_compile$mode.txt"
  echo "COMPILE=$mode rc=$rc wall_s=$(echo "$end - $start" | bc) load_after=$(cut -d' ' -f1 /proc/loadavg)"
  grep -E "^(compile|warmup_steps:|eval_prewarm_time|final_eval_prewarm_time|train_time_total_ms|final_score_exact)" "$log" \
    | sed "s/^/  /" | cut -c1-200
  grep -oE "compile:[01] \([^)]*\)" "$log" | head -1 | sed "s/^/  /"
done
