"""Sample `generate.num_samples` completions per test input for one system.

`python -m stages.generate --system S --test data/split/test.parquet --train data/split/train.parquet
--adapter {models/S|none} --out data/generations/S.parquet`. zero_shot and few_shot take
`--adapter none`; baseline, gem and polychromic take their adapter folder. Under
`accelerate launch --num_processes K` (params.yaml `launcher`) the K ranks share the test inputs and
rank 0 writes the one Parquet, the same as one process's (lib/generate.py).
"""

from __future__ import annotations

import argparse

from lib.cli import run
from lib.config import load_section, load_seed
from lib.distributed import init_dist
from lib.generate import ADAPTER_SYSTEMS, GenerateParams, generate, load_system_model
from lib.io import read_parquet, write_parquet
from lib.models import ModelParams, model_source, resolve_device
from lib.prompts import PromptParams
from lib.schemas import EXAMPLES, GENERATIONS, SYSTEMS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", choices=SYSTEMS, required=True)
    ap.add_argument("--test", required=True, help="test split Parquet (schema EXAMPLES)")
    ap.add_argument("--train", required=True, help="train split Parquet (few-shot examples)")
    ap.add_argument("--adapter", required=True, help="PEFT adapter folder, or 'none'")
    ap.add_argument("--out", required=True, help="generations Parquet to write")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    adapter = None if args.adapter == "none" else args.adapter
    if (args.system in ADAPTER_SYSTEMS) != (adapter is not None):
        need = "an adapter folder" if args.system in ADAPTER_SYSTEMS else "--adapter none"
        raise SystemExit(f"generate: system '{args.system}' needs {need}, got '{args.adapter}'")
    seed = load_seed(args.params)
    model_params = load_section(ModelParams, "model", args.params)
    model_source(model_params.base)  # a wrong model.base fails in seconds, before any data is read
    gen_params = load_section(GenerateParams, "generate", args.params)
    prompt_params = load_section(PromptParams, "prompts", args.params)

    dist = init_dist(cpu=resolve_device(model_params.device).type == "cpu")
    test = read_parquet(args.test, EXAMPLES)
    train = read_parquet(args.train, EXAMPLES) if args.system == "few_shot" else None
    model, tokenizer = load_system_model(model_params, adapter)
    df = generate(
        model,
        tokenizer,
        args.system,
        test,
        train,
        gen_params,
        prompt_params,
        seed,
        progress=not args.no_progress,
        dist=dist,
    )
    if df is not None:  # rank 0
        write_parquet(df, args.out, GENERATIONS)
        print(f"{args.system}: {len(df)} samples for {len(test)} inputs -> {args.out}")
    dist.barrier()  # no rank exits (and no launcher reports success) before the file exists


if __name__ == "__main__":
    run(main)
