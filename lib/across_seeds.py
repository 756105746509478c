"""Headline metrics across training seeds: the seed variance RESULTS.md shows next to the systems.

For system s, metric m over the runs r = 1..R (one per training seed) with a value x_r:

    mean = Σ x_r / R,        sd = √(Σ (x_r − mean)² / (R − 1))        (missing for R < 2)

and the same for the per-seed difference d_r = x_r(system) − x_r(reference), paired by seed: the
spread a system difference must clear before a single seed's result means anything. A value a
run lacks (a metric that could not be computed) is left out, and R counts the runs that have it.

`pool_scores` is the per-prompt view of the same runs: for system s, prompt i and metric m,

    x̄_si = Σ_{r ∈ R_si} x_rsi / |R_si|,     R_si = the runs where x_rsi is defined

so that the stats stage's paired tests (`lib.stats.compute_stats`) run over prompts on the
seed-mean of each prompt. Its inference is over prompts, conditional on these training seeds:
averaging removes part of the seed noise from each prompt's difference, it does not sample seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lib.schemas import SCORE_METRICS

Headline = Mapping[str, Mapping[str, float | None]]  # system -> metric -> value

# The headline columns of the summary tables (scripts/summary.py across domains, scripts/seeds.py
# across seeds).
COLUMNS = ("pass_at_1", "pass_at_10", "pass_hat_5", "semantic_diversity", "effective_diversity")


def _summary(values: list[float]) -> tuple[int, float, float]:
    n = len(values)
    mean = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return n, mean, sd


def across_seeds(
    runs: Mapping[str, Headline],
    metrics: Sequence[str],
    systems: Sequence[str],
    system: str = "polychromic",
    reference: str = "baseline",
) -> pd.DataFrame:
    """One row per (row, metric): row is a system or "<system> − <reference>", `vs` the reference
    of a difference row (None for a system's own row); columns n, mean, sd and each run's value
    (NaN where it has none)."""
    rows = []

    def value(run: str, sys_: str, m: str) -> float | None:
        v = (runs[run].get(sys_) or {}).get(m)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    names = list(runs)
    for sys_ in systems:
        for m in metrics:
            per = {r: value(r, sys_, m) for r in names}
            n, mean, sd = _summary([v for v in per.values() if v is not None])
            row = {"row": sys_, "vs": None, "metric": m, "n": n, "mean": mean, "sd": sd}
            rows.append({**row, **_nan(per)})
    for m in metrics:
        per = {}
        for r in names:
            a, b = value(r, system, m), value(r, reference, m)
            per[r] = None if a is None or b is None else a - b  # paired by seed
        n, mean, sd = _summary([v for v in per.values() if v is not None])
        row = {"row": f"{system} − {reference}", "vs": reference, "metric": m}
        rows.append({**row, "n": n, "mean": mean, "sd": sd, **_nan(per)})
    return pd.DataFrame(rows)


def _nan(per: Mapping[str, float | None]) -> dict[str, float]:
    return {r: math.nan if v is None else v for r, v in per.items()}


def to_markdown(
    df: pd.DataFrame, labels: Mapping[str, str], metric_labels: Mapping[str, str]
) -> str:
    """Rows (systems, then the difference) × metrics, each cell "mean ± sd" with R in
    parentheses where a run lacks the value; "–" where no run has it."""
    metrics = list(dict.fromkeys(df["metric"]))
    runs = df.columns[6:]
    head = ["System", *(metric_labels.get(m, m) for m in metrics)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in dict.fromkeys(df["row"]):
        cells = []
        rows = df[df["row"] == row]
        vs = None if pd.isna(rows["vs"].iloc[0]) else str(rows["vs"].iloc[0])
        for m in metrics:
            r = rows[rows["metric"] == m].iloc[0]
            if r["n"] == 0:
                cells.append("–")
                continue
            sd = "" if math.isnan(r["sd"]) else f" ± {r['sd']:.3f}"
            n = "" if r["n"] == len(runs) else f" ({r['n']})"
            cells.append(f"{r['mean']:.3f}{sd}{n}" if vs is None else f"{r['mean']:+.3f}{sd}{n}")
        if vs is None:
            name = labels.get(row, row)
        else:
            system = row.removesuffix(f" − {vs}")
            name = f"{labels.get(system, system)} − {labels.get(vs, vs)} (paired by seed)"
        out.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(out) + "\n"


def pool_scores(runs: Mapping[str, Mapping[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """run -> system -> its per-prompt SCORES table, to system -> the seed-mean table (module
    docstring). Every run must hold every system, on the same prompts: a run that scored other
    prompts would change what is averaged, so it fails, named. n_samples and n_pass add up over
    the runs (n_pass stays null where no run has a checker)."""
    names = list(runs)
    if not names:
        raise ValueError("pool_scores: no runs")
    systems = list(runs[names[0]])
    out = {}
    for sy in systems:
        tables = []
        for r in names:
            if sy not in runs[r]:
                raise ValueError(f"pool_scores: run {r!r} has no scores for {sy!r}")
            df = runs[r][sy]
            if df["id"].duplicated().any():
                raise ValueError(
                    f"pool_scores: run {r!r}, {sy}: id {df['id'][df['id'].duplicated()].iloc[0]!r} twice"
                )
            tables.append(df.set_index("id"))
        ids = tables[0].index
        for r, t in zip(names, tables, strict=True):
            if set(t.index) != set(ids):
                odd = sorted(set(t.index) ^ set(ids))
                raise ValueError(
                    f"pool_scores: run {r!r}, {sy}: {len(t)} prompts, not those of run "
                    f"{names[0]!r} ({len(ids)}); e.g. {odd[0]!r} is in one only"
                )
        stack = np.stack([t.loc[ids, list(SCORE_METRICS)].to_numpy(float) for t in tables])
        with warnings.catch_warnings():  # a prompt with no run's value stays NaN, unwarned
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(stack, axis=0)  # (R, P, M) -> (P, M)
        pooled = pd.DataFrame(mean, columns=list(SCORE_METRICS))
        pooled.insert(0, "system", sy)
        pooled.insert(1, "id", list(ids))
        pooled.insert(2, "n_samples", sum(t.loc[ids, "n_samples"].to_numpy() for t in tables))
        n_pass = pd.concat([t.loc[ids, "n_pass"] for t in tables], axis=1)
        pooled.insert(3, "n_pass", n_pass.sum(axis=1, min_count=1).astype("Int64").to_numpy())
        out[sy] = pooled
    return out
