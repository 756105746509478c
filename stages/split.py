"""split: pairs → grouped, deterministic train / val / test Parquet files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.cli import run
from lib.config import load_section, load_seed
from lib.io import atomic_path, read_parquet, write_json, write_parquet
from lib.schemas import EXAMPLES, PAIRS
from lib.split import SPLITS, SplitParams, check_sizes, split_pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True, help="directory for train/val/test.parquet")
    ap.add_argument("--report", required=True, help="split sizes JSON")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    p = load_section(SplitParams, "split", args.params)
    seed = load_seed(args.params)
    pairs = read_parquet(args.pairs, PAIRS)
    parts = split_pairs(pairs, p, seed)
    for warning in check_sizes(parts, p):
        print(f"split: warning: {warning} (split.allow_small is true)")
    out = Path(args.out)
    with atomic_path(out, is_dir=True) as tmp:  # the three files appear together or not at all
        for name in SPLITS:
            write_parquet(parts[name], tmp / f"{name}.parquet", EXAMPLES)
    sizes = {name: len(parts[name]) for name in SPLITS}
    refs = {f"{name}_references": int(parts[name]["references"].map(len).sum()) for name in SPLITS}
    write_json({**sizes, **refs, "groups": int(pairs["group"].nunique())}, args.report)
    print(f"split: {sizes} → {out}")


if __name__ == "__main__":
    run(main)
