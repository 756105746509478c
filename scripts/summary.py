"""The cross-domain summary of RESULTS.md: headline metrics per domain and system, with compute.

    python scripts/summary.py --run social=. --out reports/summary.md         # this checkout
    python scripts/summary.py --run social=reports/social_v2 --run code=reports/code_v2 \\
        --run qa=reports/qa_v2 --out reports/summary.md
    python scripts/summary.py --run social=reports/social_test/seed0,reports/social_test/seed1
                                                      # several training seeds: their means

A run is a folder holding what one `dvc repro` wrote: `stats.json` (or `metrics/stats.json`), a
stage-times table (`stage_times.tsv`, `metrics/stage_times.tsv` or `h200_stage_times.tsv`, from
scripts/timed_repro.sh: seconds a stage, on the machine that ran it) and, for the tokens
generated, the generations (`generations/*.parquet` or `data/generations/*.parquet`). Compute
columns are wall seconds of that system's train and generate stages (GPU-seconds on a one-GPU
machine) and the tokens its samples hold; a figure a run does not have is "–", never 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.across_seeds import COLUMNS  # noqa: E402
from lib.io import write_text  # noqa: E402
from lib.schemas import METRICS, SYSTEM_LABELS, SYSTEMS, TRAINED_SYSTEMS  # noqa: E402

_STATS = ("stats.json", "metrics/stats.json")
_TIMES = ("stage_times.tsv", "metrics/stage_times.tsv", "h200_stage_times.tsv")
_GENERATIONS = ("generations", "data/generations")


def _first(run: Path, names: tuple[str, ...]) -> Path | None:
    return next((run / n for n in names if (run / n).exists()), None)


def stage_seconds(run: Path) -> dict[str, float]:
    """{stage: seconds} from the run's stage-times table; empty without one."""
    path = _first(run, _TIMES)
    if path is None:
        return {}
    with path.open() as f:
        return {r["stage"]: float(r["seconds"]) for r in csv.DictReader(f, delimiter="\t")}


def tokens_generated(run: Path, system: str) -> int | None:
    """Tokens in the system's samples (`n_tokens` summed), or None without its generations."""
    folder = _first(run, _GENERATIONS)
    path = folder / f"{system}.parquet" if folder else None
    if path is None or not path.exists():
        return None
    return int(pd.read_parquet(path, columns=["n_tokens"])["n_tokens"].sum())


def rows(domain: str, run: Path) -> list[dict[str, object]]:
    """One row per system of one run: the headline means and the compute figures."""
    path = _first(run, _STATS)
    if path is None:
        raise SystemExit(f"summary: {run} has no stats.json (nor metrics/stats.json)")
    stats = json.loads(path.read_text())
    times = stage_seconds(run)
    out = []
    for s in SYSTEMS:
        row: dict[str, object] = {"domain": domain, "system": s}
        for m in COLUMNS:
            row[m] = (stats["summary"].get(m, {}).get(s) or {}).get("mean")
        row["n"] = stats.get("n_prompts", {}).get(s)
        row["train_s"] = times.get(f"train_{s}") if s in TRAINED_SYSTEMS else None
        row["generate_s"] = times.get(f"generate@{s}")
        row["tokens"] = tokens_generated(run, s)
        out.append(row)
    return out


def mean_rows(domain: str, runs: list[Path]) -> list[dict[str, object]]:
    """`rows` of each run (one a training seed), averaged per system: a figure is the mean over
    the runs, and missing when any run lacks it (a mean over fewer seeds would pass as all)."""
    per_run = [rows(domain, r) for r in runs]
    out = []
    for i, s in enumerate(SYSTEMS):
        row: dict[str, object] = {"domain": domain, "system": s, "seeds": len(runs)}
        ns = {r[i]["n"] for r in per_run}
        if len(ns) > 1:
            raise SystemExit(f"summary: {domain}: the runs evaluate {s} on different n: {ns}")
        row["n"] = ns.pop()
        for key in (*COLUMNS, "train_s", "generate_s", "tokens"):
            vals = [r[i][key] for r in per_run]
            ok = all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in vals)
            mean = sum(float(v) for v in vals) / len(vals) if ok else None  # type: ignore[arg-type]
            row[key] = round(mean) if ok and key == "tokens" else mean
        out.append(row)
    return out


def _cell(v: object, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, fmt)


def markdown(table: list[dict[str, object]]) -> str:
    label = {m.name: m.display for m in METRICS}
    head = ["Domain", "System", "n", "Seeds", *(label[m] for m in COLUMNS)]
    head += ["Train s", "Generate s", "Tokens generated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [str(r["domain"]), SYSTEM_LABELS[str(r["system"])], _cell(r["n"], "d")]
        cells.append(_cell(r["seeds"], "d"))
        cells += [_cell(r[m], ".3f") for m in COLUMNS]
        cells += [
            _cell(r["train_s"], ".0f"),
            _cell(r["generate_s"], ".0f"),
            _cell(r["tokens"], ","),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run",
        action="append",
        required=True,
        help="DOMAIN=FOLDER[,FOLDER...] (repeatable); several folders: one run per training seed",
    )
    ap.add_argument("--out", type=Path, help="write the markdown there (default: print it)")
    args = ap.parse_args(argv)
    table = []
    for spec in args.run:
        domain, sep, folder = spec.partition("=")
        if not sep or not domain or not folder:
            raise SystemExit(f"summary: --run takes DOMAIN=FOLDER, not '{spec}'")
        table += mean_rows(domain, [Path(f) for f in folder.split(",")])
    text = markdown(table)
    if args.out:
        write_text(text, args.out)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
