"""Pairwise comparisons of polychromic against each opponent, both orders, and their win rates.

Per (input, opponent, draw) the judge is asked twice: polychromic as A ("first") and as B
("second"). The outcome, from polychromic's side, is the verdict both orders agree on; orders that
disagree (a flip, including win-vs-tie) count as a tie, which cancels position bias. An order
without a verdict (unparseable, or missing after a budget stop) makes the outcome `missing`:
excluded from the rates, counted in the metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.judge.prompts import MISSING, UNPARSEABLE, Answer, Question, pair_question

SYSTEM = "polychromic"
OUTCOMES = ("win", "tie", "loss")


def seeded_rng(seed: int, *parts: str) -> np.random.Generator:
    """An RNG that depends only on the seed and the names, not on iteration order."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def pick_samples(available: Sequence[int], k: int, seed: int, id_: str, system: str) -> list[int]:
    """`k` distinct sample indices (sorted order of draws kept) for one (input, system)."""
    pool = sorted(int(s) for s in available)
    if not pool:
        return []
    rng = seeded_rng(seed, "judge-sample", id_, system)
    k = min(k, len(pool))
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def side_result(verdict: str, poly_is_a: bool) -> str | None:
    """polychromic's result in one order (win/tie/loss) or None when there is no verdict."""
    if verdict == "tie":
        return "tie"
    if verdict in ("A", "B"):
        return "win" if (verdict == "A") == poly_is_a else "loss"
    return None


def combine(verdict_first: str, verdict_second: str) -> str:
    """Outcome from both orders: agreement stands, a flip is a tie, no verdict is missing."""
    first = side_result(verdict_first, poly_is_a=True)
    second = side_result(verdict_second, poly_is_a=False)
    if first is None or second is None:
        return MISSING
    return first if first == second else "tie"


@dataclass(frozen=True)
class Pair:
    id: str
    opponent: str
    sample_system: int
    sample_opponent: int
    domain: str
    input: str
    text_system: str
    text_opponent: str


def build_pairs(
    gens: dict[str, pd.DataFrame], opponents: Sequence[str], k: int, seed: int
) -> list[Pair]:
    """Pairs on the inputs polychromic and the opponent share, ids in sorted order."""
    poly = gens[SYSTEM]
    poly_by_id = {i: g.set_index("sample") for i, g in poly.groupby("id", sort=True)}
    pairs: list[Pair] = []
    for id_ in sorted(poly_by_id):
        p = poly_by_id[id_]
        p_samples = pick_samples(p.index, k, seed, id_, SYSTEM)
        for opp in opponents:
            o_all = gens[opp]
            o = o_all[o_all["id"] == id_].set_index("sample")
            if o.empty:
                continue
            o_samples = pick_samples(o.index, k, seed, id_, opp)
            for ps, os_ in zip(p_samples, o_samples, strict=False):
                pr, orow = p.loc[ps], o.loc[os_]
                pairs.append(
                    Pair(
                        id_,
                        opp,
                        int(ps),
                        int(os_),
                        str(pr["domain"]),
                        str(pr["input"]),
                        str(pr["output"]),
                        str(orow["output"]),
                    )
                )
    return pairs


def pair_questions(pairs: Sequence[Pair], max_chars: int) -> list[Question]:
    """Two questions per pair, adjacent (so a budget stop rarely splits a pair): first order
    shows polychromic as A, second as B."""
    out = []
    for p in pairs:
        out.append(pair_question(p.domain, p.input, p.text_system, p.text_opponent, max_chars))
        out.append(pair_question(p.domain, p.input, p.text_opponent, p.text_system, max_chars))
    return out


def judgments_frame(
    pairs: Sequence[Pair], answers: Sequence[Answer], backend: str, judge_model: str
) -> pd.DataFrame:
    if len(answers) != 2 * len(pairs):
        raise ValueError(f"expected {2 * len(pairs)} answers, got {len(answers)}")
    rows = []
    for i, p in enumerate(pairs):
        a1, a2 = answers[2 * i], answers[2 * i + 1]
        rows.append(
            {
                "id": p.id,
                "system": SYSTEM,
                "opponent": p.opponent,
                "sample_system": p.sample_system,
                "sample_opponent": p.sample_opponent,
                "verdict_first": a1.verdict,
                "verdict_second": a2.verdict,
                "reason_first": a1.reason,
                "reason_second": a2.reason,
                "outcome": combine(a1.verdict, a2.verdict),
                "backend": backend,
                "judge_model": judge_model,
            }
        )
    cols = [
        "id",
        "system",
        "opponent",
        "sample_system",
        "sample_opponent",
        "verdict_first",
        "verdict_second",
        "reason_first",
        "reason_second",
        "outcome",
        "backend",
        "judge_model",
    ]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("sample_system", "sample_opponent"):
        df[c] = df[c].astype("int64")
    return df


def rates(outcomes: Sequence[str]) -> dict[str, float]:
    """win/tie/loss shares among outcomes with a verdict; NaN when there is none."""
    valid = [o for o in outcomes if o in OUTCOMES]
    n = len(valid)
    out = {o: (valid.count(o) / n if n else float("nan")) for o in OUTCOMES}
    # win + tie/2: the usual single number; 0.5 = no difference.
    out["score"] = out["win"] + 0.5 * out["tie"] if n else float("nan")
    return out


def bootstrap_ci(
    df: pd.DataFrame, n_boot: int, seed: int, label: str
) -> dict[str, tuple[float, float]]:
    """Percentile 95% CIs of the rates, resampling inputs (all comparisons of an input together,
    since draws of one input are not independent)."""
    valid = df[df["outcome"].isin(OUTCOMES)]
    ids = sorted(valid["id"].unique())
    keys = (*OUTCOMES, "score")
    if not ids or n_boot <= 0:
        return {k: (float("nan"), float("nan")) for k in keys}
    # counts[i] = (wins, ties, losses) of input i
    counts = np.array(
        [[int((g["outcome"] == o).sum()) for o in OUTCOMES] for _, g in valid.groupby("id")],
        dtype=float,
    )  # [n_ids, 3]
    rng = seeded_rng(seed, "judge-bootstrap", label)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))  # [B, n_ids]
    totals = counts[draws].sum(axis=1)  # [B, 3]
    shares = totals / totals.sum(axis=1, keepdims=True)
    stats = {"win": shares[:, 0], "tie": shares[:, 1], "loss": shares[:, 2]}
    stats["score"] = shares[:, 0] + 0.5 * shares[:, 1]
    return {
        k: (float(np.percentile(stats[k], 2.5)), float(np.percentile(stats[k], 97.5))) for k in keys
    }


def win_rate_metrics(df: pd.DataFrame, n_boot: int, seed: int) -> dict[str, dict]:
    """Per opponent: counts, win/tie/loss/score rates and bootstrap CIs."""
    out: dict[str, dict] = {}
    for opp in sorted(df["opponent"].unique()):
        sub = df[df["opponent"] == opp]
        unparseable = sub["verdict_first"].eq(UNPARSEABLE) | sub["verdict_second"].eq(UNPARSEABLE)
        not_asked = sub["verdict_first"].eq(MISSING) | sub["verdict_second"].eq(MISSING)
        flips = sub.apply(
            lambda r: (
                side_result(r["verdict_first"], True) is not None
                and side_result(r["verdict_second"], False) is not None
                and side_result(r["verdict_first"], True) != side_result(r["verdict_second"], False)
            ),
            axis=1,
        )
        r = rates(sub["outcome"].tolist())
        ci = bootstrap_ci(sub, n_boot, seed, opp)
        out[opp] = {
            "n_comparisons": int(len(sub)),
            "n_inputs": int(sub["id"].nunique()),
            "n_valid": int(sub["outcome"].isin(OUTCOMES).sum()),
            "n_missing": int((sub["outcome"] == MISSING).sum()),
            "n_unparseable": int((unparseable & ~not_asked).sum()),
            "n_not_judged": int(not_asked.sum()),
            "n_flips": int(flips.sum()) if len(sub) else 0,
            "n_win": int((sub["outcome"] == "win").sum()),
            "n_tie": int((sub["outcome"] == "tie").sum()),
            "n_loss": int((sub["outcome"] == "loss").sum()),
            "win_rate": r["win"],
            "tie_rate": r["tie"],
            "loss_rate": r["loss"],
            "score": r["score"],
            "win_rate_ci95": list(ci["win"]),
            "tie_rate_ci95": list(ci["tie"]),
            "loss_rate_ci95": list(ci["loss"]),
            "score_ci95": list(ci["score"]),
        }
    return out
