#!/usr/bin/env bash
# Paper-scale checks on one CUDA GPU with random weights (no download): the numbers of
# bench/README.md "Paper scale". Run from the repo root on the GPU machine:
#   STEP=bf16  bash bench/gpu_paper_scale.sh   # bench/train_step at Qwen3-8B shapes, bf16
#   STEP=4bit  bash bench/gpu_paper_scale.sh   # random Qwen3-8B checkpoint, NF4 QLoRA bench
#   STEP=stage bash bench/gpu_paper_scale.sh   # train_polychromic under accelerate launch, QLoRA profile
# Needs torch/transformers/peft/accelerate; bitsandbytes from .whl/ if not installed; a tokenizer
# folder in $TOK (default .carry/tok) and data/split/train.parquet for STEP=stage.
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-}:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! python3 -c "import bitsandbytes" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
ckpt=${CKPT:-.bench-model/qwen3-8b-random}
tok=${TOK:-.carry/tok}
out=${OUT:-/tmp/out}
case ${STEP:?set STEP=bf16|4bit|stage} in
  bf16)
    python3 bench/train_step.py --model qwen3-8b-random --device cuda --steps 3 ;;
  4bit)
    [[ -f $ckpt/config.json ]] || python3 bench/make_random_model.py --tokenizer "$tok" --out "$ckpt"
    python3 bench/train_step.py --model "$ckpt" --device cuda --load-in-4bit --gradient-checkpointing \
      --batch-size 2 --max-length 512 --steps 3 ;;
  stage)
    [[ -f $ckpt/config.json ]] || python3 bench/make_random_model.py --tokenizer "$tok" --out "$ckpt"
    cp params.yaml "$out/params.yaml"
    python3 scripts/use_params.py configs/qwen3-8b-qlora.yaml --params "$out/params.yaml"
    python3 - "$out/params.yaml" "$ckpt" <<'PY'
import sys, yaml
path, ckpt = sys.argv[1:]
p = yaml.safe_load(open(path))
p["model"]["base"] = ckpt
p["train"].update(max_steps=3, grad_accum=2, checkpoint_every=0)
p["loss"]["diversity"] = "lexical"  # the MiniLM package is not on the GPU image
yaml.safe_dump(p, open(path, "w"), sort_keys=False)
PY
    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
      -m stages.train_polychromic --train data/split/train.parquet --out "$out/adapter" \
      --params "$out/params.yaml" 2>&1 | tr '\r' '\n' | grep -E "train polychromic.*(3/3|2/3|1/3)|steps on"
    ls -la "$out/adapter" ;;  # no --live: the GPU image lacks dvclive; the bar shows GPU GiB
esac
