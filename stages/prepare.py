"""prepare: a domain's raw source → filtered, validated, deduplicated pairs + a data report."""

from __future__ import annotations

import argparse

from lib.cli import run
from lib.config import load_section, load_seed
from lib.data import DataParams, prepare_pairs
from lib.domains import CURATED, NO_REFERENCE, load_domain
from lib.io import write_json, write_parquet
from lib.schemas import PAIRS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="pairs Parquet")
    ap.add_argument("--report", required=True, help="data report JSON")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    p = load_section(DataParams, "data", args.params)
    seed = load_seed(args.params)
    pairs, report = prepare_pairs(
        load_domain(p),
        p,
        seed,
        reference_required=p.domain not in NO_REFERENCE,
        curated=p.domain in CURATED,
    )
    write_parquet(pairs, args.out, PAIRS)
    write_json(report, args.report)
    print(
        f"prepare: {report['rows_kept']} pairs kept of {report['rows_read']} read "
        f"({report['bad_rows']} bad, {sum(report['dropped_by_reason'].values())} filtered, "
        f"{report['dropped_by_cap']} over the cap) → {args.out}"
    )


if __name__ == "__main__":
    run(main)
