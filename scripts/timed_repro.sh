#!/usr/bin/env bash
# Run `dvc repro` one stage at a time (dvc.yaml order is topological) and record each stage's wall
# time in metrics/stage_times.tsv: the numbers RESULTS.md reports.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-metrics/stage_times.tsv}
printf 'stage\tseconds\n' > "$out.tmp"
for stage in $(dvc stage list --name-only); do
  start=$(date +%s.%N)
  dvc repro --single-item "$stage"
  end=$(date +%s.%N)
  awk -v s="$stage" -v a="$start" -v b="$end" 'BEGIN { printf "%s\t%.1f\n", s, b - a }' >> "$out.tmp"
done
mv "$out.tmp" "$out"
cat "$out"
