"""The stats stage's table over the training seeds' mean per prompt (RESULTS.md, the test runs).

    python scripts/pool_seeds.py --run reports/code_test/seed0 --run reports/code_test/seed1 \\
        --out reports/code_test/pooled

Each --run is a folder `scripts/keep_exp.py` wrote with `--outs data/scores`: its params.yaml,
`data/scores/<system>.parquet` and the score stages' `metrics/<system>.json`. For each system and
prompt the scores are averaged over the runs (`lib.across_seeds.pool_scores`), then
`lib.stats.compute_stats` tests polychromic against every system on those means exactly as the
stats stage does on one run: paired per prompt, Holm across the family, the minimum detectable
difference from the observed SD. Writes <out>.json (the stats) and <out>.md (the paper table).

What it adds to `scripts/seeds.py` (mean ± sd of the headline over seeds): one paired test per
comparison instead of one per seed, with less seed noise in each prompt's difference. What it does
not: the tests are over prompts, conditional on these R seeds, so the sd over seeds in seeds.md
still says how far another seed could move a system. The runs must share everything but
`train.seed` (data, split, evaluation, stats): anything else fails, named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.across_seeds import pool_scores  # noqa: E402
from lib.config import load_section, load_seed  # noqa: E402
from lib.experiments import flatten  # noqa: E402
from lib.io import read_parquet, write_json, write_text  # noqa: E402
from lib.report import instruments, to_markdown  # noqa: E402
from lib.schemas import SCORES, SYSTEMS  # noqa: E402
from lib.stats import StatsParams, compute_stats  # noqa: E402

# What may differ between the runs pooled: the seed of training.
_FREE = "train.seed"


def check_same_setup(params: dict[str, dict]) -> None:
    """Fail, naming the run and the key, where two runs differ in more than train.seed."""
    names = list(params)
    first = flatten(params[names[0]])
    for name in names[1:]:
        other = flatten(params[name])
        for key in sorted(set(first) | set(other)):
            if key == _FREE or first.get(key) == other.get(key):
                continue
            raise SystemExit(
                f"pool_seeds: {name}/params.yaml has {key} = "
                f"{other.get(key)!r}, {names[0]} has {first.get(key)!r}: only train.seed may differ"
            )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", type=Path, required=True, help="a kept run's folder")
    ap.add_argument("--out", type=Path, required=True, help="path without suffix")
    args = ap.parse_args(argv)
    if len(args.run) < 2:
        raise SystemExit("pool_seeds: pooling needs two runs or more (one run: its own table)")
    params = {}
    for run in args.run:
        path = run / "params.yaml"
        if not path.exists():
            raise SystemExit(f"pool_seeds: {path} missing (not a kept run's folder?)")
        params[str(run)] = yaml.safe_load(path.read_text(encoding="utf-8"))
    check_same_setup(params)
    runs = {}
    for run in args.run:
        folder = run / "data" / "scores"
        if not (folder / f"{SYSTEMS[0]}.parquet").exists():
            raise SystemExit(
                f"pool_seeds: {folder}/ has no scores: keep them with "
                f"`scripts/keep_exp.py EXP {run} --outs data/generations --outs data/scores`"
            )
        runs[str(run)] = {s: read_parquet(folder / f"{s}.parquet", SCORES) for s in SYSTEMS}
    first = args.run[0] / "params.yaml"
    p = load_section(StatsParams, "stats", first)
    stats = compute_stats(pool_scores(runs), p, load_seed(first))
    stats["settings"]["split"] = params[str(args.run[0])].get("eval_split", "test")
    stats["settings"]["pooled_runs"] = [str(r) for r in args.run]
    # One instrument across every run and system, or the means would mix them.
    stats["settings"]["encoders"] = instruments(
        {
            f"{run.name}/{s}": json.loads((run / "metrics" / f"{s}.json").read_text())
            for run in args.run
            for s in SYSTEMS
        }
    )
    write_json(stats, args.out.with_suffix(".json"))
    runs_note = ", ".join(r.name for r in args.run)
    caption = (
        f"Pooled: per prompt, each system's mean over the {len(args.run)} training seeds' runs "
        f"({runs_note}); tests over prompts, conditional on these seeds.\n\n"
    )
    table = caption + to_markdown(stats, p.decimals, p.ci_format)
    write_text(table, args.out.with_suffix(".md"))
    print(table, end="")


if __name__ == "__main__":
    main()
