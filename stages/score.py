"""score@<system>: per-prompt diversity, quality and Pass@k → scores Parquet + metrics JSON."""

from __future__ import annotations

import argparse

from lib.cli import run
from lib.config import load_section
from lib.io import read_parquet, write_json, write_parquet
from lib.schemas import EXAMPLES, GENERATIONS, SCORES
from lib.scoring import ScoreParams, score_generations


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", required=True)
    ap.add_argument("--generations", required=True)
    ap.add_argument("--val", required=True, help="val split (calibrates the social checker)")
    ap.add_argument("--out", required=True, help="per-prompt scores Parquet")
    ap.add_argument(
        "--metrics",
        required=True,
        help="means over prompts (a plain output; metrics/headline/ holds the DVC metrics)",
    )
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    p = load_section(ScoreParams, "score", args.params)
    gens = read_parquet(args.generations, GENERATIONS)
    val = read_parquet(args.val, EXAMPLES)
    scores, summary = score_generations(
        gens, val, p, args.system, where=args.generations, val_where=args.val
    )
    write_parquet(scores, args.out, SCORES)
    write_json(summary, args.metrics)
    print(f"score {args.system}: {len(scores)} prompts → {args.out}, {args.metrics}")


if __name__ == "__main__":
    run(main)
