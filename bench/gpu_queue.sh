#!/usr/bin/env bash
# A DVC queue across GPUs (issue 19): experiments queued with `dvc exp run --queue` and run by
# `dvc queue start -j $JOBS`, each stage pinned to a GPU no other worker holds by
# scripts/gpu_pin.py as params.yaml's `launcher`. From the repo root:
#   bash bench/gpu_queue.sh                     # 2 experiments of train_baseline, 2 workers
#   PROFILES="configs/gpu.yaml configs/code.yaml" TARGET=train_baseline \
#     SETS="train.lr=1e-4 train.lr=3e-4" JOBS=2 OUT=/some/dir bash bench/gpu_queue.sh
#   COMMON="data.domain=jsonl split.allow_small=true" bash bench/gpu_queue.sh   # no data package
# Each word of SETS is one experiment's `-S` (comma-separated for several keys); each word of
# COMMON is a `-S` of every experiment. While the queue
# runs, the GPUs' compute processes are sampled once a second into $OUT/gpu_use.csv; afterwards
# $OUT/queue.md has `dvc queue status`, which GPU each experiment's stages took (from
# `dvc queue logs`), their overlap in time, and `dvc exp show`. Where the checkout has no .git (the
# lent GPU machine gets a copy of the working tree), a throwaway repository is made first, since
# DVC experiments are git commits. GPU_PIN_DEVICES picks the GPUs (default: every one).
set -euo pipefail
out=${OUT:-/tmp/gpu_queue}
mkdir -p "$out"
jobs=${JOBS:-2}
target=${TARGET:-train_baseline}
profiles=${PROFILES:-configs/gpu.yaml}
read -r -a sets <<<"${SETS:-train.lr=1e-4 train.lr=3e-4}"
read -r -a common <<<"${COMMON:-}"
launcher=${LAUNCHER:-python scripts/gpu_pin.py python}
md=$out/queue.md
: >"$md"
export NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

source scripts/queue_guard.sh
for p in $profiles; do python3 scripts/use_params.py "$p"; done
# The profiles become the queue's base commit: queued experiments start from HEAD, not from the
# working tree.
if ! git diff --quiet -- params.yaml; then
  git_ commit -qm "params profile: $profiles" -- params.yaml
fi

names=()
for i in "${!sets[@]}"; do
  name="q$i-$(date +%s)"
  args=(-S "launcher=$launcher")
  for s in "${common[@]}"; do args+=(-S "$s"); done
  IFS=, read -r -a kv <<<"${sets[$i]}"
  for s in "${kv[@]}"; do args+=(-S "$s"); done
  dvc exp run --queue -n "$name" "${args[@]}" "$target" >/dev/null
  names+=("$name")
done

(while :; do
  nvidia-smi --query-compute-apps=timestamp,pid,gpu_bus_id,used_memory --format=csv,noheader \
    2>/dev/null | sed "s/^/$(date +%s.%N),/"
  sleep 1
done >"$out/gpu_use.csv") &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

t0=$(date +%s)
queue_run "$jobs" 2
t1=$(date +%s)
kill $sampler 2>/dev/null || true

{
  echo "## dvc queue: ${#names[@]} experiments of $target, $jobs workers, $((t1 - t0)) s in all"
  echo
  echo '```'
  dvc queue status
  echo '```'
  echo
  echo "| experiment | -S | GPU taken by each pinned stage (gpu_pin, with the time) |"
  echo "|---|---|---|"
} >>"$md"
for i in "${!names[@]}"; do
  log=$out/${names[$i]}.log
  dvc queue logs "${names[$i]}" >"$log" 2>&1 || true
  pins=$(grep -o 'gpu_pin: GPU [^ ]* at [0-9:]*' "$log" | sed 's/gpu_pin: //' | paste -sd';' - || true)
  echo "| ${names[$i]} | ${sets[$i]} | ${pins:-none found} |" >>"$md"
done
{
  echo
  # Columns: our sample time, nvidia-smi's timestamp, pid, bus id, memory.
  echo "Most GPUs busy at once (gpu_use.csv, sampled each second):" \
    "$(awk -F, '{seen[$1 FS $4] = 1} END {for (k in seen) {split(k, a, FS); n[a[1]]++}
      m = 0; for (t in n) if (n[t] > m) m = n[t]; print m}' "$out/gpu_use.csv")"
  echo
  dvc exp show --no-pager --md --drop '.*' --keep "Experiment|train.lr|seed|State" || true
} >>"$md"
cat "$md"
# This run's experiments alone decide the exit status (a queue keeps earlier runs' entries).
st=$(dvc queue status 2>/dev/null)
for name in "${names[@]}"; do
  grep -E "\b$name\b" <<<"$st" | grep -q Success || exit 1
done
