"""The headline numbers: the few DVC metrics `dvc metrics show` / `dvc exp show` print."""

from __future__ import annotations

from typing import Any

from lib.schemas import SYSTEMS
from lib.stats import TARGET

# What `dvc exp show` / `dvc metrics show` show by default: metrics/headline/<system>.json, one
# small file per system, so `dvc metrics show` is a table with a row per system.
HEADLINE = (
    "pass_at_1",
    "pass_at_5",
    "pass_at_10",
    "pass_hat_5",
    "semantic_diversity",
    "effective_diversity",
    "self_bleu",
    "rouge_l",
    "bertscore_f1",
)


def headline(stats: dict[str, Any], decimals: int = 4) -> dict[str, Any]:
    """{system: {metric: mean}} for HEADLINE, plus `poly_judge_score`: the judge's score of
    polychromic (win + tie/2) against that system (absent for polychromic itself; null for a
    system the judge did not compare). A metric that could not be computed is null, never 0."""

    def r(v: Any) -> float | None:
        return None if v is None else round(float(v), decimals)

    out: dict[str, Any] = {}
    for s in SYSTEMS:
        row = {}
        for m in HEADLINE:
            row[m] = r((stats["summary"].get(m, {}).get(s) or {}).get("mean"))
        if s != TARGET:  # DVC drops null metrics anyway: the column reads "-" for polychromic
            e = ((stats.get("judge") or {}).get("opponents") or {}).get(s) or {}
            row["poly_judge_score"] = r(e.get("score"))  # win + tie/2, lib.stats
        out[s] = row
    return out
