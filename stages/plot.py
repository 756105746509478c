"""Stage plot: paper figures (PDF + PNG) and the small tables `dvc plots` draws, under plots/.

python -m stages.plot --scores-dir data/scores --stats metrics/stats.json \
    --judge data/judge/comparisons.parquet --train-logs metrics/train --out plots

The judge file and the training logs are optional: a missing one skips its figure with a message.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lib import figures as F
from lib.cli import run
from lib.config import load_section
from lib.io import atomic_path, read_parquet
from lib.schemas import JUDGMENTS, SCORE_METRICS, SCORES, SYSTEMS


def build(args: argparse.Namespace, p: F.PlotParams, out: Path) -> list[str]:
    stats = json.loads(args.stats.read_text(encoding="utf-8"))
    known = set(stats["summary"]) | {"inv_self_bleu"}
    for key, names in (
        ("diversity_metric", [p.diversity_metric]),
        ("tradeoff_quality", [p.tradeoff_quality]),
        ("quality_metrics", p.quality_metrics),
        ("bar_metrics", p.bar_metrics),
    ):
        bad = [n for n in names if n not in known]
        if bad:
            raise ValueError(f"{args.params}: plot.{key} names unknown metric(s) {bad}")
    data = out / "data"
    made: list[str] = []

    def fig(name: str, figure) -> None:
        if figure is None:
            print(f"plot: skipped {name} (no data)")
            return
        made.extend(str(x.relative_to(out)) for x in F.save(figure, out, name, p))

    for family in ("pass_at_k", "pass_hat_k"):  # Pass@k and pass^k, k = 1..10
        pk = F.pass_at_k_frame(stats, family)
        F.write_csv(pk, data / f"{family}.csv")
        F.write_csv(
            pk.pivot(index="k", columns="system", values=family)[list(SYSTEMS)].reset_index(),
            data / f"{family}_wide.csv",
        )
    fig("pass_at_k", F.pass_at_k_figure(stats))

    to = F.tradeoff_frame(stats, p.diversity_metric, p.tradeoff_quality)
    F.write_csv(to, data / "tradeoff.csv")
    for s in SYSTEMS:  # one file per system, so `dvc plots` colours the points by system
        F.write_csv(to[to["system"] == s][["diversity", "quality"]], data / "tradeoff" / f"{s}.csv")
    fig("tradeoff", F.tradeoff_figure(stats, p.diversity_metric, p.quality_metrics))

    ml = F.metrics_frame(stats)
    F.write_csv(ml, data / "metrics_long.csv")
    bars = ml[ml["metric"].isin(p.bar_metrics)].assign(
        label=lambda d: d["metric"] + " · " + d["system"]
    )
    F.write_csv(bars[["label", "mean"]].dropna(), data / "metric_bars.csv")
    fig("metric_bars", F.metric_bars_figure(stats, p.bar_metrics))

    if args.scores_dir is not None:
        long = []
        for s in SYSTEMS:
            df = read_parquet(args.scores_dir / f"{s}.parquet", SCORES)
            long.append(
                df.melt(id_vars=["system", "id"], value_vars=list(SCORE_METRICS), var_name="metric")
            )
        F.write_csv(pd.concat(long, ignore_index=True), data / "per_prompt.csv")

    if args.judge is not None and args.judge.exists():
        j = read_parquet(args.judge, JUDGMENTS)
        jf = F.judge_frame(j)
        F.write_csv(jf, data / "judge.csv")
        fig("judge", F.judge_figure(jf, ", ".join(sorted(j["backend"].unique()))))
    else:
        print(f"plot: skipped judge (no comparisons at {args.judge})")

    if args.train_logs is not None and args.train_logs.exists():
        fig("training", F.training_figure(args.train_logs))
    else:
        print(f"plot: skipped training (no logs at {args.train_logs})")
    return made


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores-dir", type=Path, default=None)
    ap.add_argument("--stats", type=Path, required=True)
    ap.add_argument("--judge", type=Path, default=None)
    ap.add_argument("--train-logs", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)

    p = load_section(F.PlotParams, "plot", args.params)
    with atomic_path(args.out, is_dir=True) as tmp:  # plots/ is replaced whole or not at all
        made = build(args, p, tmp)
    print(f"plot: wrote {len(made)} figure files under {args.out}: {', '.join(made)}")


if __name__ == "__main__":
    run(main)
