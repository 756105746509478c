#!/usr/bin/env bash
# The λ × objective sweep of RESULTS.md: one DVC experiment per configuration, evaluated on the val
# split (test is looked at once, for the chosen configuration). λ = 0 trains exactly like baseline
# whatever the objective, so it runs once. Afterwards: `dvc exp show`, and the Pareto front with
# `python scripts/pareto.py --where eval_split=val --param loss.lambda --param loss.objective`.
#   bash scripts/sweep.sh                  # λ in {0, 0.1, 0.3, 1.0} × {additive, multiplicative}
#   LAMBDAS="0 0.5" OBJECTIVES=additive bash scripts/sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lambdas=${LAMBDAS:-0 0.1 0.3 1.0}
objectives=${OBJECTIVES:-additive multiplicative}
for obj in $objectives; do
  for lam in $lambdas; do
    if [[ $lam == 0 && $obj != "${objectives%% *}" ]]; then continue; fi
    name="val-${obj:0:4}-l${lam}"
    echo "== $name"
    dvc exp run -n "$name" -S eval_split=val -S "loss.lambda=$lam" -S "loss.objective=$obj" "$@"
  done
done
dvc exp show --no-pager --md --drop '.*' \
  --keep 'Experiment|loss.lambda|loss.objective|headline/polychromic.json:(pass_at_10|pass_at_1|semantic_diversity|self_bleu|rouge_l)$'
