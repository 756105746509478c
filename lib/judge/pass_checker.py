"""Judge-based Pass@k for domains without an executable checker (social, creative).

A sample passes when the judge answers `yes` to "is this response acceptable under the rubric"
(rubric from params). Per input: n = samples with a verdict, c = those that pass, and
pass@k = 1 − C(n−c, k)/C(n, k) (Chen et al. 2021), NaN for k > n or when n = 0. Samples left
unjudged (budget stop) or unparseable shrink n; they never count as failures.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lib.judge.prompts import Question, pass_question
from lib.metrics import pass_at_k

KS = tuple(range(1, 11))


def pass_at_k_row(n: int, c: int) -> dict[str, float]:
    return {f"pass_at_{k}": (pass_at_k(n, c, k) if 0 < k <= n else float("nan")) for k in KS}


def pass_questions(
    gens: pd.DataFrame, rubric: str, max_chars: int, domains: Sequence[str]
) -> tuple[pd.DataFrame, list[Question]]:
    """The rows to check (in the pass domains) and one question per row, in the same order."""
    rows = gens[gens["domain"].isin(list(domains))].sort_values(["system", "id", "sample"])
    rows = rows.reset_index(drop=True)
    questions = [
        pass_question(str(r.domain), str(r.input), str(r.output), rubric, max_chars)
        for r in rows.itertuples(index=False)
    ]
    return rows, questions


def pass_table(rows: pd.DataFrame, verdicts: Sequence[str], backend: str) -> pd.DataFrame:
    """Per (system, id): n_samples judged, n_pass, pass_at_1..10 (unbiased estimator)."""
    if len(rows) != len(verdicts):
        raise ValueError(f"expected {len(rows)} verdicts, got {len(verdicts)}")
    rows = rows.assign(verdict=list(verdicts))
    out = []
    for (system, id_), g in rows.groupby(["system", "id"], sort=True):
        judged = g[g["verdict"].isin(["yes", "no"])]
        n, c = len(judged), int((judged["verdict"] == "yes").sum())
        out.append(
            {
                "system": system,
                "id": id_,
                "n_samples": n,
                "n_pass": c,
                **pass_at_k_row(n, c),
                "backend": backend,
            }
        )
    cols = ["system", "id", "n_samples", "n_pass", *(f"pass_at_{k}" for k in KS), "backend"]
    df = pd.DataFrame(out, columns=cols)
    df["n_samples"] = df["n_samples"].astype("int64")
    df["n_pass"] = df["n_pass"].astype("int64")
    return df
