"""Quality–diversity Pareto front of polychromic across DVC experiments, labelled by λ.

python scripts/pareto.py --out reports/pareto             # runs `dvc exp show --json`
python scripts/pareto.py --exp-json exps.json --quality pass_at_10 --out plots/pareto
python scripts/pareto.py --where eval_split=val --param loss.lambda --param loss.objective  # the sweep
python scripts/pareto.py --rows reports/social_sweep/selection.csv --rows-quality primary \
    --quality pass_at_10 --param loss.lambda --param loss.objective --out reports/social_sweep/pareto
                       # from a table already read (select_sweep's): no experiments needed

Reads each experiment's params (default loss.lambda) and metrics/headline/polychromic.json, marks the
non-dominated experiments (both axes maximised), writes <out>.pdf/.png and <out>.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from lib import experiments  # noqa: E402
from lib import figures as F  # noqa: E402
from lib import pareto as P  # noqa: E402
from lib.config import params_for  # noqa: E402
from lib.io import atomic_path  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp-json", type=Path, help="saved `dvc exp show --json` (default: run it)")
    ap.add_argument("--metrics-file", default="metrics/headline/polychromic.json")
    ap.add_argument("--system", default="", help="key of the system in the metrics file, if any")
    ap.add_argument("--diversity", default="semantic_diversity", help="or inv_self_bleu")
    ap.add_argument("--quality", default="rouge_l", help="e.g. rouge_l, bertscore_f1, pass_at_10")
    ap.add_argument("--param", action="append", help="dotted params.yaml key (repeatable)")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("reports/pareto"),
        help="path without suffix (not under plots/, which the plot stage owns)",
    )
    ap.add_argument("--formats", default="pdf,png")
    ap.add_argument(
        "--where",
        action="append",
        default=[],
        help="KEY=VALUE params filter, repeatable; e.g. eval_split=val (never mix val and test)",
    )
    ap.add_argument(
        "--rows",
        type=Path,
        help="CSV of experiments already read (experiment, the params, diversity, a quality "
        "column), e.g. scripts/select_sweep.py's; instead of `dvc exp show`",
    )
    ap.add_argument("--rows-quality", default="quality", help="--rows' quality column")
    args = ap.parse_args(argv)

    params = tuple(args.param or ["loss.lambda"])
    if args.rows is not None:
        table = pd.read_csv(args.rows)
        cols = ["experiment", *params, "diversity", args.rows_quality]
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise SystemExit(f"pareto: {args.rows} has no column {missing}")
        table = table[cols].rename(columns={args.rows_quality: "quality"})
        df = P.front_rows(table.dropna(subset=["diversity", "quality"]), params)
    else:
        df = P.experiment_rows(
            experiments.exp_show(args.exp_json),
            args.metrics_file,
            args.diversity,
            args.quality,
            params,
            where=experiments.where_params(args.where),
            system=args.system or None,
        )
    if df.empty:
        raise SystemExit(f"pareto: no experiment has both {args.diversity} and {args.quality}")
    with atomic_path(args.out.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)
    fig = P.pareto_figure(
        df,
        F.METRIC_LABELS.get(args.diversity, args.diversity),
        F.METRIC_LABELS.get(args.quality, args.quality),
    )
    p = params_for("plot", formats=tuple(args.formats.split(",")))
    paths = F.save(fig, args.out.parent, args.out.name, p)
    front = df[df["on_front"]]
    print(f"pareto: {len(df)} experiments, {len(front)} on the front: {', '.join(front['label'])}")
    print("pareto: wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
