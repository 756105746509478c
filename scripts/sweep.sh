#!/usr/bin/env bash
# The λ × objective sweep of RESULTS.md: one DVC experiment per configuration, evaluated on the val
# split (test is looked at once, for the chosen configuration). λ = 0 trains exactly like baseline
# whatever the objective, so it runs once. Afterwards: `dvc exp show`, and the Pareto front with
# `python scripts/pareto.py --where eval_split=val --param loss.lambda --param loss.objective`.
#   bash scripts/sweep.sh                  # RESULTS.md's v2 grid (as amended): λ in {0, 3, 10, 30}
#                                          # × {additive, multiplicative, passk}: 10 experiments
#   LAMBDAS="0 0.5" OBJECTIVES=additive bash scripts/sweep.sh
#   NAMES="val-addi-l0 val-addi-l10" bash scripts/sweep.sh   # only these of the grid (a round
#                                          # that fits one lease; the rest in the next)
#   QUEUE=1 JOBS=2 bash scripts/sweep.sh   # queued, 2 at a time, each stage on its own GPU
#   QUEUE=1 JOBS=4 GPU_PIN_SLOTS=2 bash scripts/sweep.sh generate@polychromic
#                                          # 2 per GPU on two GPUs, up to the val generations
# QUEUE=1 queues every configuration (`dvc exp run --queue`) with scripts/gpu_pin.py as the launcher
# and runs them with `dvc queue start -j $JOBS`, then waits (docs/training.md, "A queue across
# GPUs"); SNAPSHOT=1 commits a lent machine's copy first (scripts/queue_guard.sh).
# PRINT=1 prints the grid, one experiment a line (name, then its `dvc exp run` -S arguments), and
# runs nothing: `scripts/gpu_lease.sh sweep` starts each line in its own clone.
set -euo pipefail
cd "$(dirname "$0")/.."
lambdas=${LAMBDAS:-0 3 10 30}
objectives=${OBJECTIVES:-additive multiplicative passk}
# λ outer: a queue cut short has finished every objective at the first λs, not one objective.
grid() {
  for lam in $lambdas; do
    for obj in $objectives; do
      if [[ $lam == 0 && $obj != "${objectives%% *}" ]]; then continue; fi
      name=val-${obj:0:4}-l${lam}
      if [[ -n ${NAMES:-} && " $NAMES " != *" $name "* ]]; then continue; fi
      echo "$name -S eval_split=val -S loss.lambda=$lam -S loss.objective=$obj"
    done
  done
}
if [[ ${PRINT:-0} == 1 ]]; then grid; exit 0; fi
if [[ ${QUEUE:-0} == 1 ]]; then source scripts/queue_guard.sh; fi
while read -r name sargs; do
  echo "== $name"
  read -ra args <<<"$sargs"
  if [[ ${QUEUE:-0} == 1 ]]; then
    dvc exp run --queue -n "$name" "${args[@]}" -S "launcher=python scripts/gpu_pin.py python" "$@" </dev/null
  else
    dvc exp run -n "$name" "${args[@]}" "$@" </dev/null
  fi
done < <(grid)
if [[ ${QUEUE:-0} == 1 ]]; then
  queue_run "${JOBS:-2}" 10
  dvc queue status
fi
dvc exp show --no-pager --md --drop '.*' \
  --keep 'Experiment|loss.lambda|loss.objective|metrics/headline/polychromic.json:(pass_at_10|pass_at_1|pass_hat_5|semantic_diversity|effective_diversity|self_bleu|rouge_l)$'
