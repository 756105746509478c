#!/usr/bin/env bash
# Score GPU-lease experiments here, where their adapters are not (collect leaves files over 8 MB on
# the machine): for each experiment, its exact tree, the cached generations, `score@SYSTEM` run
# (never restored from the run cache), and the experiment saved again under the same name.
#   bash scripts/score_exps.sh BASE EXP...          # in a clone that gpu_import.sh filled
#   SYSTEMS="polychromic" (default) or e.g. SYSTEMS="zero_shot few_shot baseline gem polychromic"
#   AFTER="stats plot": stages run after the scores, on the experiment's own outputs (a test run
#   that ran up to `judge` on the GPU: its judge file comes from the cache), saved with them
# Why not `dvc exp apply`: it stops at the missing adapter and leaves a workspace that is half
# the experiment's and half HEAD's (its metrics/train/ deleted), and a `dvc exp save` of that
# workspace records the old scores as the new run's outputs, in the shared run cache too.
# Each scored experiment must cover the prompts of its own eval split: checked before saving.
set -euo pipefail
base=${1:?usage: bash scripts/score_exps.sh BASE EXP...}
shift
systems=${SYSTEMS:-polychromic}
after=${AFTER:-}
for name in "$@"; do
  ref=$(git for-each-ref --format='%(refname)' "refs/exps/${base:0:2}/*/$name")
  [[ -n $ref ]] || { echo "score_exps: no experiment $name under ${base:0:7}" >&2; exit 1; }
  git checkout -q -f "$ref^{commit}" && git reset -q --soft "$base"
  targets=(data/split)
  for s in $systems; do targets+=("data/generations/$s.parquet"); done
  dvc checkout -q "${targets[@]}"
  # The later stages read more of the run (the judge's file, the training curves): everything
  # the cache holds, the adapters (left on the GPU machine) excepted.
  [[ -n $after ]] && dvc checkout -q --allow-missing
  for s in $systems; do dvc repro -q --allow-missing --force -s "score@$s"; done
  python - "$systems" <<'PY'
import sys

import pandas as pd
import yaml

split = yaml.safe_load(open("params.yaml"))["eval_split"]
want = set(pd.read_parquet(f"data/split/{split}.parquet")["id"])
for s in sys.argv[1].split():
    got = set(pd.read_parquet(f"data/scores/{s}.parquet")["id"])
    if got != want:
        sys.exit(f"score_exps: data/scores/{s}.parquet has {len(got)} ids, not the {len(want)} of {split}")
PY
  for s in $after; do dvc repro -q --allow-missing --force -s "$s"; done
  dvc exp save -q -f -n "$name" $(printf 'score@%s ' $systems) $after
  echo "score_exps: $name scored ($systems)${after:+, then $after,} and saved"
done
git checkout -q -f "$base"
