#!/usr/bin/env bash
# Source on an offline GPU machine, from the repo root: installs the wheelhouse (.whl/, from
# scripts/gpu_wheels.sh) into $SITE once, puts `python` and `dvc` on PATH (dvc.yaml's stages run
# `python -m`), and exports the environment the stages expect. scripts/gpu_repro.sh and
# bench/gpu_queue.sh run under it:
#   source scripts/gpu_env.sh && bash bench/gpu_queue.sh
site=${SITE:-/root/site}
if [[ ! -f $site/.wheels ]]; then
  bash scripts/gpu_site.sh "$site" >/dev/null || return 1
  touch "$site/.wheels"
fi
mkdir -p "$site/bin"
# A wrapper, not a link: a link to a venv's interpreter from outside the venv loses its packages.
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >"$site/bin/python"
chmod +x "$site/bin/python"
if [[ ! -x $site/bin/dvc ]]; then  # pip --target skips scripts when bin/ already exists
  printf '#!/bin/sh\nexec python3 -m dvc "$@"\n' >"$site/bin/dvc"
  chmod +x "$site/bin/dvc"
fi
export PYTHONPATH=$site:$PWD PATH=$site/bin:$PATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export POLYCHROMIC_CACHE=${POLYCHROMIC_CACHE:-/root/cache}
# NVLink multicast stays off on the lent machines (NCCL must not use NVLS).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
