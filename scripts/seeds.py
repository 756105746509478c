"""Headline metrics of the test runs across training seeds (RESULTS.md's 3-seed table).

    python scripts/seeds.py --exp test-s0-addi-l10 --exp test-s1-addi-l10 --exp test-s2-addi-l10 \\
        --out reports/social_test/seeds

    python scripts/seeds.py --run reports/qa_test/seed0 --run reports/qa_test/seed1 \\
        --run reports/qa_test/seed2 --out reports/qa_test/seeds     # kept runs (keep_exp.py)

Reads each experiment's `metrics/headline/<system>.json` (the stats stage's DVC metrics) from
`dvc exp show --json` (or --exp-json), or from a kept run's folder (experiment refs and the DVC
cache do not outlive a workplace; reports/ does), and writes <out>.md and <out>.csv: per system and metric the
mean ± sd over the seeds, and polychromic − baseline paired by seed (`lib.across_seeds`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.across_seeds import COLUMNS, across_seeds, to_markdown  # noqa: E402
from lib.experiments import exp_show, exp_states, stale_at  # noqa: E402
from lib.io import atomic_path  # noqa: E402
from lib.schemas import METRIC, SYSTEM_LABELS, SYSTEMS  # noqa: E402


def headlines(exp_show: list, names: list[str]) -> dict[str, dict]:
    """name -> system -> headline metrics, for each named experiment (missing ones fail, named)."""
    found = {}
    for st in exp_states(exp_show):
        if st.get("name") in names:
            met = (st.get("data") or {}).get("metrics") or {}
            found[st["name"]] = {
                s: (met.get(f"metrics/headline/{s}.json") or {}).get("data") or {} for s in SYSTEMS
            }
    missing = [n for n in names if n not in found or not any(found[n].values())]
    if missing:
        raise SystemExit(f"seeds: no headline metrics for {missing} (did their stats stage run?)")
    return {n: found[n] for n in names}


def kept_headlines(runs: list[Path]) -> dict[str, dict]:
    """folder name -> system -> headline metrics, from kept runs' metrics/headline/ (keep_exp.py
    checked them against each run's dvc.lock); a run lacking a system's file fails, named."""
    found = {}
    for run in runs:
        files = {s: run / "metrics" / "headline" / f"{s}.json" for s in SYSTEMS}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise SystemExit(
                f"seeds: {run}: no headline metrics {missing} (keep the run's metrics/)"
            )
        found[run.name] = {s: json.loads(f.read_text(encoding="utf-8")) for s, f in files.items()}
    if len(found) < len(runs):
        raise SystemExit(f"seeds: two runs share a folder name: {[str(r) for r in runs]}")
    return found


def revs(exp_show: list, names: list[str]) -> dict[str, str]:
    return {st["name"]: str(st["rev"]) for st in exp_states(exp_show) if st.get("name") in names}


def check_fresh(rev_of: dict[str, str]) -> None:
    """Fail, naming the experiment and stages, where its dvc.lock is not one consistent run: its
    headline metrics would be another run's."""
    for name, rev in rev_of.items():
        stale = stale_at(rev)
        stale.pop("plot", None)  # the figures: not what the headline metrics come from
        if stale:
            raise SystemExit(
                f"seeds: {name} ({rev[:7]}): stale stages in its dvc.lock, {stale}; "
                "run them (`dvc repro`) and save the experiment again"
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--exp", action="append", help="experiment name, one a seed")
    src.add_argument("--run", action="append", type=Path, help="a kept run's folder, one a seed")
    ap.add_argument("--exp-json", type=Path, help="saved `dvc exp show --json` (default: run it)")
    ap.add_argument("--metric", action="append", help=f"default: {', '.join(COLUMNS)}")
    ap.add_argument("--out", type=Path, required=True, help="path without suffix")
    args = ap.parse_args(argv)
    metrics = tuple(args.metric or COLUMNS)
    if args.run:
        heads = kept_headlines(args.run)
    else:
        exp = exp_show(args.exp_json, ["--all-commits"])
        heads = headlines(exp, args.exp)
        if args.exp_json is None:  # the commits are in this repository: check each lock
            check_fresh(revs(exp, args.exp))
    df = across_seeds(heads, metrics, SYSTEMS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)
    md = to_markdown(df, SYSTEM_LABELS, {m: METRIC[m].display for m in metrics})
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(md, encoding="utf-8")
    print(md, end="")


if __name__ == "__main__":
    main()
