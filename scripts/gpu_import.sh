#!/usr/bin/env bash
# Take in what `scripts/gpu_lease.sh collect` brought back from a GPU lease, in this checkout:
#   bash scripts/gpu_import.sh DIR      # DIR: runs.tar.NN or t<k>.bundle, cache_t<k>.tgz (files_at)
# Fetches each bundle's experiments (refs/exps, with the lease's base commit) and merges each
# cache archive into this checkout's DVC cache (`dvc cache dir`), then lists the experiments.
# The adapters stayed on the machine (collect leaves files over 8 MB), so run the stages after
# generate here with `dvc repro --allow-missing` (`dvc exp apply` first).
set -euo pipefail
dir=${1:?usage: bash scripts/gpu_import.sh DIR}
cache=$(dvc cache dir)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob
# collect's runs.tar.NN parts (joined in order), and loose files as earlier leases wrote them.
mkdir -p "$tmp/runs"
parts=("$dir"/runs.tar.[0-9][0-9])
((${#parts[@]} == 0)) || cat "${parts[@]}" | tar -xf - -C "$tmp/runs"
for b in "$dir"/t*.bundle "$tmp"/runs/t*.bundle; do
  # A bundle leaves out the commit the lease started from: fetch it from origin if it is missing.
  if ! git bundle verify -q "$b" 2>/dev/null; then
    git fetch -q origin 2>/dev/null || true
    git bundle verify -q "$b" || {
      echo "$b: this clone lacks the commit the lease started from (fetch it, then rerun)" >&2
      exit 1
    }
  fi
  # The experiments' refs only: refs/exps/exec/ holds DVC's own run-time pointers.
  refs=$(git bundle list-heads "$b" | awk '$2 ~ /^refs\/exps\// && $2 !~ /^refs\/exps\/exec\// {print $2 ":" $2}')
  # A run the lease cut short has no experiment commit: say so, and take in the others.
  [[ -n $refs ]] || { echo "$b: no experiment in it (the run did not finish); skipped" >&2; continue; }
  git fetch -q "$b" $refs
  echo "fetched $(basename "$b")"
done
for c in "$dir"/cache_t*.tgz "$tmp"/runs/cache_t*.tgz; do
  rm -rf "$tmp/x" && mkdir -p "$tmp/x"
  tar -xzf "$c" -C "$tmp/x"
  # Content-addressed: an object already here has the same bytes, so never overwrite one.
  (cd "$tmp/x/.dvc/cache" && find . -type f -print0 | while IFS= read -r -d '' f; do
    [[ -e $cache/$f ]] || { mkdir -p "$cache/$(dirname "$f")" && cp "$f" "$cache/$f"; }
  done)
  echo "merged $(basename "$c") into $cache"
done
dvc exp list --all-commits
