#!/usr/bin/env bash
# The val curves that choose training length (RESULTS.md's rule, issue 18), on one GPU: polychromic
# (params as given) and polychromic at λ 0, kl_coef 0 (baseline's training bit for bit, with the
# samples still drawn and rewarded, so it has a val reward curve too), run side by side on the
# same GPU (a 135M step is launch-bound, so two processes share it well).
#   bash scripts/gpu_curves.sh PARAMS SPLIT_DIR STEPS [OUT]
# PARAMS: a whole params.yaml (e.g. params.yaml + configs/gpu.yaml + configs/social.yaml merged);
# SPLIT_DIR: the split stage's folder (train.parquet, val.parquet). The DVCLive folders (val/ce,
# val/reward, the train curves) land in OUT/{polychromic,lambda0}; stage logs beside them. The
# wheelhouse and the model packages must be installed as for scripts/gpu_repro.sh ($SITE).
set -uo pipefail
params=$1 split=$2 steps=$3 out=${4:-${OUT:-curves}}
site=${SITE:-/root/site}
export PYTHONPATH=$site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export POLYCHROMIC_CACHE=${POLYCHROMIC_CACHE:-/root/cache}
mkdir -p "$out"
python3 - "$params" "$steps" "$out" <<'PY'
import sys, yaml
src, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = yaml.safe_load(open(src))
p["train"].update(max_steps=steps, checkpoint_every=0)
open(f"{out}/params-polychromic.yaml", "w").write(yaml.safe_dump(p, sort_keys=False))
p["loss"].update({"lambda": 0.0, "kl_coef": 0.0})
open(f"{out}/params-lambda0.yaml", "w").write(yaml.safe_dump(p, sort_keys=False))
PY
for run in polychromic lambda0; do
  # LIMIT (seconds): stop a run there; the DVCLive rows written so far are kept.
  timeout "${LIMIT:-infinity}" python3 -m stages.train_polychromic --train "$split/train.parquet" --val "$split/val.parquet" \
    --out "/tmp/curves-adapter-$run" --live "$out/$run" --params "$out/params-$run.yaml" \
    --no-progress >"$out/$run.log" 2>&1 &
done
wait
tail -n 3 "$out"/*.log
# One table of every curve (run, metric, step, value) beside the folders, and one archive of them.
printf 'run\tmetric\tstep\tvalue\n' >"$out/curves.tsv"
for run in polychromic lambda0; do
  for f in "$out/$run"/plots/metrics/*/*.tsv; do
    [[ -f $f ]] || continue
    m=$(basename "$(dirname "$f")")/$(basename "$f" .tsv)
    tail -n +2 "$f" | awk -F'\t' -v r="$run" -v m="$m" '{print r "\t" m "\t" $1 "\t" $2}' >>"$out/curves.tsv"
  done
done
tar -czf "$out/curves.tgz" -C "$out" polychromic lambda0 2>/dev/null
awk -F'\t' '$2 ~ /^val\// {printf "%s %s %s %.4f\n", $1, $2, $3, $4}' "$out/curves.tsv"
