"""Write a random-weight checkpoint with a real model's shapes, to measure a path (e.g. 4-bit QLoRA)
at full size where no weights can be downloaded.

    python bench/make_random_model.py --arch qwen3-8b --tokenizer DIR --out /tmp/qwen3-8b-random

The folder then loads like any local checkpoint: `-S model.base=/tmp/qwen3-8b-random`.
"""

from __future__ import annotations

import argparse
import time

import torch
from shapes import QWEN3_8B_SHAPES

ARCHS = {"qwen3-8b": QWEN3_8B_SHAPES}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="qwen3-8b")
    ap.add_argument(
        "--tokenizer", required=True, help="a tokenizer folder saved beside the weights"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    t0 = time.perf_counter()
    config = Qwen3Config(**ARCHS[args.arch], dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch}: {n / 1e9:.2f}B params written to {args.out} in {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
