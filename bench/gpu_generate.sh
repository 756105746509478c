#!/usr/bin/env bash
# The generate numbers of bench/README.md on one CUDA GPU, random weights (no download). From the
# repo root on the GPU machine:
#   PART=bf16   bash bench/gpu_generate.sh  # eager vs graphed stage path, Qwen3-8B shapes, bf16
#   PART=nf4    bash bench/gpu_generate.sh  # the same on a random Qwen3-8B checkpoint in NF4
#   PART=stages bash bench/gpu_generate.sh  # the five generate@* stage calls, before and after
# PART=all runs the three in turn. bitsandbytes: installed, or unpacked in $SITE (default ./site),
# or wheels in .whl/. A tokenizer folder in $TOK (default ./tok) writes the checkpoint $CKPT.
set -uo pipefail
export PYTHONPATH=${SITE:-$PWD/site}:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
if ! python3 -c "import bitsandbytes" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
ckpt=${CKPT:-/tmp/qwen3-8b-random}
load="--prompts 32 --samples 10 --max-new-tokens 32 --batch-size 320 --repeats 2 --device cuda"
part=${PART:-all}
if [[ $part == all || $part == bf16 ]]; then
  timeout ${T_BF16:-150} python3 -m bench.generate --model qwen3-8b-random $load \
    --methods ${METHODS:-stage,graph,graph_reused,graph_greedy}
fi
if [[ $part == all || $part == nf4 || $part == stages ]] && [[ ! -f $ckpt/config.json ]]; then
  timeout ${T_CKPT:-150} python3 bench/make_random_model.py --tokenizer "${TOK:-tok}" --out "$ckpt"
fi
if [[ $part == all || $part == nf4 ]]; then
  timeout ${T_NF4:-150} python3 -m bench.generate --model "$ckpt" --load-in-4bit --random-prompts \
    $load --methods ${METHODS:-stage,graph,graph_reused,graph_greedy}
fi
if [[ $part == all || $part == stages ]]; then
  timeout ${T_STAGES:-300} python3 bench/generate_stages.py --ckpt "$ckpt" \
    --modes ${MODES:-after,before} --systems ${SYSTEMS:-zero_shot,few_shot,baseline,gem,polychromic} \
    --budget-s ${STAGE_BUDGET:-240}
fi
