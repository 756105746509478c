"""Stage stats: polychromic vs every other system on per-prompt scores → stats.json + paper table.

python -m stages.stats --scores-dir data/scores --judge data/judge/comparisons.parquet \
    --out metrics/stats.json --table-md metrics/table.md --table-tex metrics/table.tex

The judge file is optional (a missing one leaves the judge row n/a); a missing score file is an error.
`--score-metrics-dir` (metrics/<system>.json of the score stages) names the encoders in the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lib.cli import run
from lib.config import load_section, load_seed
from lib.io import read_parquet, write_json, write_text
from lib.report import headline, instruments, to_latex, to_markdown
from lib.schemas import JUDGMENTS, SCORES, SYSTEMS
from lib.stats import StatsParams, compute_stats


def read_scores(scores_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for system in SYSTEMS:
        path = scores_dir / f"{system}.parquet"
        df = read_parquet(path, SCORES)  # FileNotFoundError names the file
        wrong = df.index[df["system"] != system]
        if len(wrong):
            raise ValueError(
                f"{path}: row {int(wrong[0])} has system {df.loc[wrong[0], 'system']!r}, "
                f"expected {system!r}"
            )
        out[system] = df
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores-dir", type=Path, required=True)
    ap.add_argument("--judge", type=Path, default=None, help="optional JUDGMENTS parquet")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--headline-dir",
        type=Path,
        default=None,
        help="one small JSON of headline numbers per system (the DVC metrics)",
    )
    ap.add_argument("--table-md", type=Path, required=True)
    ap.add_argument("--table-tex", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument(
        "--score-metrics-dir",
        type=Path,
        default=None,
        help="directory of the score stages' <system>.json (the encoders they measured with)",
    )
    ap.add_argument(
        "--split", choices=["test", "val"], default="test", help="split the scores come from"
    )
    args = ap.parse_args(argv)

    p = load_section(StatsParams, "stats", args.params)
    seed = load_seed(args.params)
    scores = read_scores(args.scores_dir)
    judgments = None
    if args.judge is not None and args.judge.exists():
        judgments = read_parquet(args.judge, JUDGMENTS)
    else:
        print(f"stats: no judge comparisons at {args.judge}; the judge row will read n/a")

    stats = compute_stats(scores, p, seed, judgments)
    stats["settings"]["split"] = args.split  # labels the table: val numbers are for tuning only
    if args.score_metrics_dir is not None:
        stats["settings"]["encoders"] = instruments(
            {s: json.loads((args.score_metrics_dir / f"{s}.json").read_text()) for s in SYSTEMS}
        )
    write_json(stats, args.out)
    if args.headline_dir is not None:
        for system, row in headline(stats).items():
            write_json(row, args.headline_dir / f"{system}.json")
    write_text(to_markdown(stats, p.decimals, p.ci_format), args.table_md)
    write_text(to_latex(stats, p.decimals, p.ci_format), args.table_tex)
    print(f"stats: wrote {args.out}, {args.table_md}, {args.table_tex}")


if __name__ == "__main__":
    run(main)
