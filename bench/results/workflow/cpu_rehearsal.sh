#!/usr/bin/env bash
# The README's CPU path (sections 2 and 6), command by command, with the wall time of each step:
# quick start (seed 1337), a second seed, new, validate --rescore, compare. Run it from the root
# of a fresh clone: bash bench/results/workflow/cpu_rehearsal.sh > cpu_rehearsal.txt 2>&1
set -u
cd "$(dirname "$0")/../../.."  # the repository root
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg)"
step() {  # step NAME COMMAND...: run it, keep the last lines, time it
  local t0=$(date +%s.%N); echo "\$ ${*:2}"
  bash -c "${*:2}" > /tmp/rehearsal_step.out 2>&1; local rc=$?
  tail -n "${TAIL:-6}" /tmp/rehearsal_step.out | cut -c1-220
  echo "## $1: rc=$rc wall_s=$(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.1f') load=$(cut -d' ' -f1 /proc/loadavg)"
}
step quick_start 'env $(cat configs/cpu_sample.env) SEED=1337 RUN_ID=cpu_s1337 python train_gpt.py'
step second_seed 'env $(cat configs/cpu_sample.env) SEED=42 RUN_ID=cpu_s42 python train_gpt.py'
TAIL=12 step new 'python records/records_tool.py new logs/cpu_s1337.txt logs/cpu_s42.txt --track non_record_16mb --name "CPU rehearsal" --author "Jane Doe" --github-id janedoe --description CPU_Rehearsal --blurb "The sample preset."'
TAIL=30 step validate_rescore 'python records/records_tool.py validate records/track_non_record_16mb/*_CPU_Rehearsal --rescore logs/cpu_s1337.int6-int8_brotli11'
TAIL=8 step compare 'python records/records_tool.py compare logs/cpu_s1337.txt logs/cpu_s42.txt --out curves.png'
