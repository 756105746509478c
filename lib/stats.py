"""Statistics over per-prompt scores: polychromic against every other system.

Samples of one prompt are not independent, so every test here runs on the per-prompt table
(`lib.schemas.SCORES`, one row per test id): n is the number of prompts, never of samples.

For each metric and opponent the prompts where either system's value is NaN are dropped from that
comparison (the count is reported as `n_dropped`); a metric with no usable prompt is missing (None
everywhere), never 0. Reported per comparison:
- paired: Wilcoxon signed-rank p (scipy defaults), mean difference with a percentile bootstrap CI
  over prompts, d_z = mean(diff) / SD(diff), matched-pairs rank-biserial correlation;
- unpaired (the source design's tests, on the same prompts): Mann-Whitney U p, Cohen's d with the
  pooled SD;
- Holm-adjusted p-values over the whole family (every opponent × metric with a finite p);
- the minimum detectable effect (`mde`): the smallest true mean paired difference a two-sided paired
  t-test at level `stats.alpha` detects with probability `stats.power`, given the observed SD of the
  per-prompt differences and n; `mde_bonferroni` the same at alpha / family size (Holm's strictest
  step, so an upper bound on what a Holm-corrected † needs). A sensitivity analysis: it uses the
  observed SD, never the observed difference.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from lib.config import ParamsError, param
from lib.power import detectable_d, min_detectable_effect
from lib.schemas import SCORE_METRICS, SYSTEMS

TARGET = "polychromic"


@dataclass(frozen=True)
class StatsParams:
    """`stats:` in params.yaml."""

    bootstrap: int = param(ge=1)  # resamples for every percentile CI
    alpha: float = param(gt=0, lt=1)  # CI level 1 − alpha; significance threshold after Holm
    power: float = param(gt=0, lt=1)  # of the minimum detectable effect (two-sided, level alpha)
    ci_format: Literal["halfwidth", "interval"] = param()
    decimals: int = param(ge=0, le=10)

    def __post_init__(self) -> None:
        if self.power <= self.alpha:  # at d = 0 the test already rejects with probability alpha
            raise ParamsError(
                f"power = {self.power} <= stats.alpha = {self.alpha}: need power > alpha"
            )


def _rng(seed: int, *key: str) -> np.random.Generator:
    # A stable per-quantity stream: adding a metric or system never shifts another CI.
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in key)])


def _finite(x: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=float)
    return a[np.isfinite(a)]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_resamples: int,
    alpha: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean: (alpha/2, 1 − alpha/2) quantiles of resampled means.

    NaN values are not accepted (drop them first); an empty input raises ValueError.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if not np.isfinite(x).all():
        raise ValueError("bootstrap_ci: values contain NaN/inf; drop missing prompts first")
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))  # (B, n)
    means = x[idx].mean(axis=1)  # (B,)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def ratio_bootstrap_ci(
    num: np.ndarray, den: np.ndarray, n_resamples: int, alpha: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile CI of sum(num)/sum(den) resampling clusters (prompts) with replacement.

    The pooled ratio (e.g. wins / judged pairs) is the point estimate; resampling whole prompts
    keeps the CI honest when one prompt contributes several correlated judgments.
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    if num.size == 0 or num.shape != den.shape or (den <= 0).any():
        raise ValueError("ratio_bootstrap_ci: need matching non-empty arrays with den > 0")
    idx = rng.integers(0, num.size, size=(n_resamples, num.size))  # (B, clusters)
    ratios = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean a − mean b) / pooled SD (ddof 1). NaN when undefined (n < 2 each, or SD 0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return math.nan
    pooled = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    if pooled <= 0:
        return math.nan
    return float((a.mean() - b.mean()) / math.sqrt(pooled))


def paired_d(diffs: Sequence[float]) -> float:
    """d_z = mean(diff) / SD(diff) (ddof 1); NaN when n < 2 or every difference is equal."""
    d = np.asarray(diffs, float)
    if d.size < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd <= 0:
        return math.nan
    return float(d.mean() / sd)


def rank_biserial(diffs: Sequence[float]) -> float:
    """Matched-pairs rank-biserial r = (R+ − R−) / (R+ + R−), zero differences dropped (Kerby 2014).

    In [−1, 1]; NaN when every difference is zero.
    """
    d = np.asarray(diffs, float)
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ranks = sps.rankdata(np.abs(d))
    r_plus, r_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((r_plus - r_minus) / (r_plus + r_minus))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries stay NaN and are not part of the family."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def _mean_ci(values: np.ndarray, p: StatsParams, seed: int, *key: str) -> dict[str, Any]:
    if values.size == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = bootstrap_ci(values, p.bootstrap, p.alpha, _rng(seed, *key))
    return {"mean": float(values.mean()), "ci_low": lo, "ci_high": hi, "n": int(values.size)}


def compare_one(
    target: pd.Series, opponent: pd.Series, p: StatsParams, seed: int, *key: str
) -> dict[str, Any]:
    """Polychromic (`target`) vs `opponent` on one metric; both indexed by prompt id."""
    joined = pd.concat([target.rename("t"), opponent.rename("o")], axis=1, join="outer")
    ok = joined["t"].notna() & joined["o"].notna()
    t = joined.loc[ok, "t"].to_numpy(float)
    o = joined.loc[ok, "o"].to_numpy(float)
    res: dict[str, Any] = {"n_pairs": int(ok.sum()), "n_dropped": int((~ok).sum())}
    nulls = [
        "mean_target",
        "mean_opponent",
        "diff",
        "ci_low",
        "ci_high",
        "p_wilcoxon",
        "p_holm",
        "d_paired",
        "rank_biserial",
        "p_mannwhitney",
        "p_mannwhitney_holm",
        "cohens_d",
        "sd_diff",
        "mde",
        "mde_bonferroni",
    ]
    if t.size == 0:
        return res | dict.fromkeys(nulls)
    diffs = t - o
    lo, hi = bootstrap_ci(diffs, p.bootstrap, p.alpha, _rng(seed, "diff", *key))
    with warnings.catch_warnings():
        # scipy warns (and returns p = 1) when every difference is zero; n = 1 is similar.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        p_w = float(sps.wilcoxon(t, o).pvalue)
        p_u = float(sps.mannwhitneyu(t, o, alternative="two-sided").pvalue)
    return res | {
        "mean_target": float(t.mean()),
        "mean_opponent": float(o.mean()),
        "diff": float(diffs.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "p_wilcoxon": p_w,
        "p_holm": None,  # filled across the family
        "d_paired": paired_d(diffs),
        "rank_biserial": rank_biserial(diffs),
        "p_mannwhitney": p_u,
        "p_mannwhitney_holm": None,
        "cohens_d": cohens_d(t, o),
        "sd_diff": float(diffs.std(ddof=1)) if diffs.size >= 2 else None,
        "mde": _none_if_nan(min_detectable_effect(diffs, p.alpha, p.power)),
        "mde_bonferroni": None,  # needs the family size: filled across the family
    }


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def _by_id(df: pd.DataFrame, metric: str, where: str) -> pd.Series:
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"{where}: prompt id {dup!r} appears twice; scores must be per prompt")
    return df.set_index("id")[metric].astype(float)


def judge_summary(
    judgments: pd.DataFrame | None, p: StatsParams, seed: int
) -> dict[str, Any] | None:
    """Win / tie / loss rates of polychromic against each opponent, from JUDGMENTS rows.

    Rows with outcome `missing` are counted but left out of the rates. The headline is the score
    win + tie/2 (0.5 = no difference); `informative` is false when no pair was decided (all ties,
    e.g. every pair flipped with the order), so the table can say so instead of "0.500 ± 0.000".
    The CIs bootstrap prompts (several judged sample pairs of one prompt are not independent); the
    sign test compares wins with losses (ties dropped), Holm-adjusted over the opponents.
    """
    if judgments is None:
        return None
    out: dict[str, Any] = {
        "backend": sorted(judgments["backend"].unique().tolist()),
        "judge_model": sorted(judgments["judge_model"].unique().tolist()),
        "opponents": {},
    }
    for opp in [s for s in SYSTEMS if s != TARGET]:
        rows = judgments[judgments["opponent"] == opp]
        valid = rows[rows["outcome"].isin(["win", "tie", "loss"])]
        counts = {k: int((valid["outcome"] == k).sum()) for k in ("win", "tie", "loss")}
        entry: dict[str, Any] = counts | {
            "missing": int(len(rows) - len(valid)),
            "n": int(len(valid)),
            "n_prompts": int(valid["id"].nunique()),
        }
        entry["informative"] = counts["win"] + counts["loss"] > 0
        if len(valid) == 0:
            entry |= dict.fromkeys(
                ["win_rate", "tie_rate", "loss_rate", "ci_low", "ci_high", "p_sign", "p_sign_holm"]
                + ["score", "score_ci_low", "score_ci_high"]
            )
        else:
            n = len(valid)
            g = (valid["outcome"] == "win").groupby(valid["id"])
            lo, hi = ratio_bootstrap_ci(
                g.sum().to_numpy(float),
                g.size().to_numpy(float),
                p.bootstrap,
                p.alpha,
                _rng(seed, "judge", opp),
            )
            points = (valid["outcome"] == "win") + 0.5 * (valid["outcome"] == "tie")
            s_lo, s_hi = ratio_bootstrap_ci(
                points.groupby(valid["id"]).sum().to_numpy(float),
                g.size().to_numpy(float),
                p.bootstrap,
                p.alpha,
                _rng(seed, "judge-score", opp),
            )
            decided = counts["win"] + counts["loss"]
            p_sign = float(sps.binomtest(counts["win"], decided, 0.5).pvalue) if decided else None
            entry |= {
                "win_rate": counts["win"] / n,
                "tie_rate": counts["tie"] / n,
                "loss_rate": counts["loss"] / n,
                "ci_low": lo,
                "ci_high": hi,
                "score": (counts["win"] + 0.5 * counts["tie"]) / n,
                "score_ci_low": s_lo,
                "score_ci_high": s_hi,
                "p_sign": p_sign,
                "p_sign_holm": None,
            }
        out["opponents"][opp] = entry
    opps = list(out["opponents"])
    raw = [
        math.nan if out["opponents"][o]["p_sign"] is None else out["opponents"][o]["p_sign"]
        for o in opps
    ]
    for o, adj in zip(opps, holm(raw), strict=True):
        out["opponents"][o]["p_sign_holm"] = None if math.isnan(adj) else adj
    return out


def effective_diversity_coverage(scores: pd.DataFrame) -> dict[str, Any]:
    """Prompts where effective diversity is defined (≥ 2 passing samples), of all prompts.

    `fraction` is None where no prompt has a checker (`n_pass` null everywhere, e.g. creative):
    effective diversity does not apply there, which is not the same as covering no prompt.
    """
    defined = int(np.isfinite(scores["effective_diversity"].to_numpy(float)).sum())
    checked = int(scores["n_pass"].notna().sum())
    n = int(len(scores))
    frac = defined / n if checked and n else None
    return {"defined": defined, "checked": checked, "prompts": n, "fraction": frac}


def compute_stats(
    scores: Mapping[str, pd.DataFrame],
    p: StatsParams,
    seed: int,
    judgments: pd.DataFrame | None = None,
    metrics: Sequence[str] = SCORE_METRICS,
) -> dict[str, Any]:
    """Everything `metrics/stats.json` holds. `scores` maps every system of SYSTEMS to its table."""
    missing = [s for s in SYSTEMS if s not in scores]
    if missing:
        raise ValueError(f"compute_stats: no scores for system(s) {missing}")
    summary: dict[str, dict[str, Any]] = {}
    for m in metrics:
        summary[m] = {
            s: _mean_ci(_finite(scores[s][m].to_numpy(float)), p, seed, "mean", m, s)
            for s in SYSTEMS
        }
    comparisons: dict[str, dict[str, Any]] = {}
    for opp in [s for s in SYSTEMS if s != TARGET]:
        comparisons[opp] = {}
        for m in metrics:
            comparisons[opp][m] = compare_one(
                _by_id(scores[TARGET], m, TARGET),
                _by_id(scores[opp], m, opp),
                p,
                seed,
                m,
                opp,
            )
    # Holm over the whole family (every opponent × metric), once per test.
    cells = [(o, m) for o in comparisons for m in comparisons[o]]
    for raw_key, adj_key in (("p_wilcoxon", "p_holm"), ("p_mannwhitney", "p_mannwhitney_holm")):
        raw = [comparisons[o][m][raw_key] for o, m in cells]
        adj = holm([math.nan if v is None else v for v in raw])
        for (o, m), v in zip(cells, adj, strict=True):
            comparisons[o][m][adj_key] = None if math.isnan(v) else v
    family = sum(comparisons[o][m]["p_wilcoxon"] is not None for o, m in cells)
    for o, m in cells:
        c = comparisons[o][m]
        if family and c["mde"] is not None:  # None: fewer than 2 pairs or no spread
            d = detectable_d(c["n_pairs"], p.alpha / family, p.power)
            c["mde_bonferroni"] = d * c["sd_diff"]
    return {
        "summary": summary,
        "comparisons": comparisons,
        "judge": judge_summary(judgments, p, seed),
        "n_prompts": {s: int(len(scores[s])) for s in SYSTEMS},
        "settings": {
            "target": TARGET,
            "bootstrap": p.bootstrap,
            "alpha": p.alpha,
            "seed": seed,
            "ci": "percentile bootstrap over prompts",
            "holm_family_size": family,
            "power": p.power,
            "mde": "two-sided paired t-test (noncentral t), observed SD of the differences",
        },
        "effective_diversity_coverage": {
            sy: effective_diversity_coverage(scores[sy]) for sy in SYSTEMS
        },
    }
