"""Wall time of the five `generate@*` stage calls at the paper profile's size, before and after.

    python bench/generate_stages.py --ckpt DIR [--tokenizer DIR] [--modes after,before]
        [--inputs 100] [--budget-s 400]

Each call is `python -m stages.generate` in its own process (model load included), as dvc runs
it, on `configs/qwen3-8b-qlora.yaml` merged into params.yaml: NF4 Qwen3-8B, 100 test inputs × 10
samples, social's 48 new tokens. `before`: `generate.decode: eager`, `batch_size: 640` (the
profile's value before `auto`): the eager sampler. `after`: `decode: auto`, `batch_size: auto`.
Stand-ins, no download: DIR is a random-weight checkpoint (bench/make_random_model.py, written
here from `--tokenizer` if missing), the test/train splits are synthetic social messages of
5-60 words, and baseline/gem/polychromic load random LoRA adapters (r 16 on every projection,
the trainer's shapes). Random weights never emit EOS, so every sample runs its full 48 tokens.
Runs stop being started once `--budget-s` has passed; the table says what ran.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import deep_merge, read_params  # noqa: E402
from lib.generate import ADAPTER_SYSTEMS  # noqa: E402
from lib.io import read_parquet, write_parquet  # noqa: E402
from lib.schemas import EXAMPLES, GENERATIONS, SYSTEMS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "a",
    "you",
    "i",
    "we",
    "they",
    "my",
    "your",
    "that",
    "this",
    "what",
    "how",
    "why",
    "when",
    "so",
    "just",
    "really",
    "think",
    "know",
    "like",
    "love",
    "hate",
    "going",
    "weekend",
    "lake",
    "cousins",
    "puppy",
    "shoes",
    "work",
    "tired",
    "coffee",
    "rain",
    "movie",
    "game",
    "friend",
    "today",
    "tomorrow",
    "tonight",
    "maybe",
    "never",
    "always",
    "again",
    "please",
    "thanks",
    "sorry",
    "lol",
    "okay",
    "yes",
    "no",
]


def split(n: int, prefix: str, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) for _ in range(n)]
    return pd.DataFrame(
        {
            "id": [f"{prefix}-{i}" for i in range(n)],
            "domain": ["social"] * n,
            "input": texts,
            "reference": [f"reply {i}" for i in range(n)],
            "group": [f"{prefix}{i}" for i in range(n)],
            "meta": ["{}"] * n,
            "split": [prefix] * n,
            "references": [[f"reply {i}"] for i in range(n)],
        }
    )


def random_adapter(ckpt: Path, out: Path) -> None:
    """A LoRA adapter with the trainer's shapes and random A, B, built on the meta device (no
    8B model in memory)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from lib.config import params_for

    lora = params_for("lora")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ckpt))
    cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(0)
    for name, mod in peft_model.named_modules():
        if name.endswith(("lora_A.default", "lora_B.default")):
            shape = mod.weight.shape
            mod.weight = torch.nn.Parameter(torch.randn(shape, generator=g) * 0.01)
    peft_model.save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokenizer", help="tokenizer folder, to write --ckpt if it is missing")
    ap.add_argument("--modes", default="after,before")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--inputs", type=int, default=100)
    ap.add_argument("--work", default="/tmp/generate_stages")
    ap.add_argument("--budget-s", type=float, default=400.0)
    ap.add_argument("--profile", default=str(ROOT / "configs/qwen3-8b-qlora.yaml"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    ckpt, work = Path(args.ckpt), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (ckpt / "config.json").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench/make_random_model.py"), "--tokenizer",
             args.tokenizer, "--out", str(ckpt)],
            check=True,
        )  # fmt: skip
    write_parquet(split(args.inputs, "test", 1), work / "test.parquet", EXAMPLES)
    write_parquet(split(40, "train", 2), work / "train.parquet", EXAMPLES)
    adapter = work / "adapter"
    if not (adapter / "adapter_config.json").exists():
        random_adapter(ckpt, adapter)
    setup_s = time.perf_counter() - t_start

    base = deep_merge(read_params(ROOT / "params.yaml"), read_params(args.profile))
    base["model"]["base"] = str(ckpt)
    settings = {
        "before": {"decode": "eager", "batch_size": 640},
        "after": {"decode": "auto", "batch_size": "auto"},
    }
    times: dict[tuple[str, str], float] = {}
    for mode in args.modes.split(","):
        params = deep_merge(base, {"generate": settings[mode]})
        path = work / f"params-{mode}.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        for system in args.systems.split(","):
            if time.perf_counter() - t_start > args.budget_s:
                print(f"budget spent: {mode}/{system} not run", flush=True)
                continue
            out = work / f"{mode}-{system}.parquet"
            cmd = [
                sys.executable, "-m", "stages.generate", "--system", system,
                "--test", str(work / "test.parquet"), "--train", str(work / "train.parquet"),
                "--adapter", str(adapter) if system in ADAPTER_SYSTEMS else "none",
                "--out", str(out), "--params", str(path), "--no-progress",
            ]  # fmt: skip
            t = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT)
            times[(mode, system)] = time.perf_counter() - t
            df = read_parquet(out, GENERATIONS)
            print(
                f"{mode} {system}: {times[(mode, system)]:.1f} s, {len(df)} samples, "
                f"{int(df['n_tokens'].sum())} tokens",
                flush=True,
            )

    print(f"\nsetup (checkpoint, data, adapter): {setup_s:.0f} s")
    print(f"| system | {' | '.join(args.modes.split(','))} |")
    print("|---|" + "---|" * len(args.modes.split(",")))
    systems = args.systems.split(",")
    for system in [*systems, "total"]:
        cells = []
        for mode in args.modes.split(","):
            if system == "total":
                ran = [times[(mode, s)] for s in systems if (mode, s) in times]
                cells.append(f"{sum(ran):.1f} s ({len(ran)} calls)")
            else:
                v = times.get((mode, system))
                cells.append("not run" if v is None else f"{v:.1f} s")
        print(f"| {system} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
