#!/usr/bin/env bash
# On the offline GPU machine, from the repo root: install the wheelhouse of scripts/gpu_wheels.sh
# (.whl/) into a target folder without an index or dependency resolution, and check the imports.
#   bash scripts/gpu_site.sh [/root/site]
#   export PYTHONPATH=/root/site PATH=/root/site/bin:$PATH; dvc repro
set -euo pipefail
site=${1:-/root/site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
PYTHONPATH=$site python3 -c 'import dvc, dvclive, rouge_score, bert_score, anthropic, nltk, pygit2
from dvc import __version__ as v; print("ok: dvc", v, "on", __import__("sys").version.split()[0])'
command -v python >/dev/null || echo "warning: no 'python' on PATH; dvc.yaml stages run 'python -m'" >&2
echo "export PYTHONPATH=$site PATH=$site/bin:\$PATH"
