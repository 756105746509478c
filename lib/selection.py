"""RESULTS.md's selection rule over a val sweep, applied to per-prompt scores.

The rule (written down before the sweep ran): the highest primary metric wins; a configuration
within one paired standard error of the best counts as tied with it; a tie goes to the higher
held-out semantic diversity, then to the smaller λ.

For configuration c against the best b on the same n prompts, d_i = m_b,i − m_c,i and

    SE(d) = sd(d_1..d_n; ddof 1) / √n,        tied  ⇔  mean(d) ≤ SE(d)

(the best is tied with itself: d ≡ 0; "within" includes equality). Prompts must be the same in
every configuration (paired): anything else fails, naming the configurations, since a mean over
other prompts is not comparable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd


def _within(diff: float, se: float) -> bool:
    """diff ≤ se, equality included: one differing prompt out of n gives mean(d) = SE(d) = 1/n
    exactly, which floating point computes a few ulps apart (0.01 against 0.00999…)."""
    return diff <= se or math.isclose(diff, se, rel_tol=1e-9, abs_tol=1e-12)


def select(
    scores: Mapping[str, pd.DataFrame],
    params: Mapping[str, Mapping[str, object]],
    primary: str = "pass_at_10",
    diversity: str = "semantic_diversity",
    smaller_first: str = "loss.lambda",
) -> pd.DataFrame:
    """One row per configuration, the chosen one flagged.

    `scores[name]`: its per-prompt score table (columns `id`, `primary`, `diversity`);
    `params[name]`: the params shown beside it (must hold `smaller_first`). Columns: experiment,
    each param, primary (mean), diff (best − this, mean), paired_se, tied, diversity (mean),
    chosen. Prompts with a missing primary value fail: a missing metric is never read as 0.
    """
    if not scores:
        raise ValueError("select: no configuration to choose from")
    names = sorted(scores)
    per = {}  # name -> primary by prompt id                                     [n]
    for n in names:
        df = scores[n]
        if df["id"].duplicated().any():
            raise ValueError(f"select: {n}: duplicate prompt ids in its scores")
        s = df.set_index("id")[primary].astype(float)
        if s.isna().any():
            raise ValueError(f"select: {n}: {primary} missing for {int(s.isna().sum())} prompts")
        per[n] = s
    ids = set(per[names[0]].index)
    for n in names[1:]:
        if set(per[n].index) != ids:
            raise ValueError(
                f"select: {names[0]} and {n} were scored on different prompts; "
                "the rule compares configurations paired per prompt"
            )
    order = sorted(ids)
    m = {n: per[n].loc[order].to_numpy() for n in names}  # [n] each
    mean = {n: float(m[n].mean()) for n in names}
    best = max(names, key=lambda n: (mean[n], n))  # ties on the mean: resolved below, not here
    rows = []
    for n in names:
        d = m[best] - m[n]  # [n]
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
        rows.append(
            {
                "experiment": n,
                **{k: params[n].get(k) for k in params[n]},
                "primary": mean[n],
                "diff": float(d.mean()),
                "paired_se": se,
                "tied": _within(float(d.mean()), 0.0 if np.isnan(se) else se),
                "diversity": float(scores[n][diversity].astype(float).mean()),
            }
        )
    out = pd.DataFrame(rows)
    tied = out[out["tied"]]
    lam = tied[smaller_first].astype(float)
    key = pd.DataFrame({"div": -tied["diversity"], "lam": lam, "name": tied["experiment"]})
    chosen = key.sort_values(["div", "lam", "name"]).iloc[0]["name"]
    out["chosen"] = out["experiment"] == chosen
    return out.sort_values("primary", ascending=False, kind="stable").reset_index(drop=True)
