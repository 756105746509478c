"""Judge logic on hand-made cases: parsing, order swap, flip-to-tie, win-rate arithmetic, Pass@k."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from lib.judge.anthropic_backend import backoff_delay, parse_retry_after
from lib.judge.compare import (
    bootstrap_ci,
    build_pairs,
    combine,
    judgments_frame,
    pair_questions,
    pick_samples,
    rates,
    win_rate_metrics,
)
from lib.judge.pass_checker import pass_at_k_row, pass_table
from lib.judge.prompts import PAIR_CHOICES, PASS_CHOICES, Answer, parse_answer
from lib.schemas import SYSTEMS
from tests.fakes import generations_frame


@pytest.mark.parametrize(
    ("text", "verdict", "reason"),
    [
        ("Verdict: A\nReason: more on topic.", "A", "more on topic."),
        ("verdict: b\nreason: B answers it", "B", "B answers it"),
        ("Verdict: Tie.\nReason: both fine", "tie", "both fine"),
        ("**Verdict:** B\n**Reason:** it's clearer", "B", "it's clearer"),
        ("Verdict: Response A\nReason: x", "A", "x"),
        ("Verdict: [[B]]", "B", None),
        ("A\nBecause it is better", "A", None),
        ("Some preamble\nVerdict: tie\nReason: same", "tie", "same"),
        ("Verdict: both\nReason: equal", "unparseable", "equal"),
        ("I cannot decide.", "unparseable", None),
        ("", "unparseable", None),
        ("Verdict: Absolutely A", "unparseable", None),
    ],
)
def test_parse_answer(text, verdict, reason):
    a = parse_answer(text, PAIR_CHOICES)
    assert a.verdict == verdict
    assert a.reason == reason


def test_parse_pass_answer():
    assert parse_answer("Verdict: YES\nReason: fine", PASS_CHOICES).verdict == "yes"
    assert parse_answer("Verdict: no", PASS_CHOICES).verdict == "no"
    assert parse_answer("Verdict: A", PASS_CHOICES).verdict == "unparseable"


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("A", "B", "win"),  # polychromic preferred in both positions
        ("B", "A", "loss"),
        ("tie", "tie", "tie"),
        ("A", "A", "tie"),  # always picks the first shown: position bias, a flip → tie
        ("B", "B", "tie"),
        ("A", "tie", "tie"),  # win in one order, tie in the other: disagreement → tie
        ("tie", "A", "tie"),
        ("A", "unparseable", "missing"),
        ("missing", "B", "missing"),
        ("unparseable", "unparseable", "missing"),
    ],
)
def test_combine_flip_rule(first, second, outcome):
    assert combine(first, second) == outcome


def _gens(system: str, ids=("q1", "q2"), n=3) -> pd.DataFrame:
    return generations_frame(
        system, ids, n, input="input {id}", output="{system} says {id}/{sample}"
    )


def test_order_swap_questions():
    gens = {"polychromic": _gens("polychromic"), "gem": _gens("gem")}
    pairs = build_pairs(gens, ["gem"], k=1, seed=1)
    qs = pair_questions(pairs, max_chars=1000)
    assert len(qs) == 2 * len(pairs) == 4
    p = pairs[0]
    first, second = qs[0].user, qs[1].user
    a1, b1 = first.index("Response A:"), first.index("Response B:")
    assert first.index(p.text_system) > a1 and first.index(p.text_system) < b1
    assert first.index(p.text_opponent) > b1
    a2, b2 = second.index("Response A:"), second.index("Response B:")
    assert a2 < second.index(p.text_opponent) < b2
    assert second.index(p.text_system) > b2
    assert p.text_system == f"polychromic says {p.id}/{p.sample_system}"
    assert p.text_opponent == f"gem says {p.id}/{p.sample_opponent}"


def test_pick_samples_deterministic_and_independent_of_order():
    a = pick_samples([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 3, 42, "q1", "gem")
    assert a == pick_samples([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 3, 42, "q1", "gem")
    assert len(set(a)) == 3 and all(0 <= s <= 9 for s in a)
    draws = {tuple(pick_samples(range(10), 3, s, "q1", "gem")) for s in range(20)}
    assert len(draws) > 1  # the seed matters
    assert pick_samples([4, 7], 5, 0, "q", "gem") in ([4, 7], [7, 4])
    assert pick_samples([], 1, 0, "q", "gem") == []


def test_build_pairs_skips_ids_the_opponent_lacks():
    gens = {"polychromic": _gens("polychromic", ("q1", "q2")), "gem": _gens("gem", ("q2",))}
    pairs = build_pairs(gens, ["gem"], k=2, seed=0)
    assert [p.id for p in pairs] == ["q2", "q2"]
    assert len({p.sample_system for p in pairs}) == 2


def _frame(outcomes_by_id: dict[str, list[tuple[str, str]]], opponent="gem") -> pd.DataFrame:
    from lib.judge.compare import Pair

    pairs, answers = [], []
    for id_, verdicts in outcomes_by_id.items():
        for j, (v1, v2) in enumerate(verdicts):
            pairs.append(Pair(id_, opponent, j, j, "social", "x", "p", "o"))
            answers += [Answer(v1, "r1"), Answer(v2, "r2")]
    return judgments_frame(pairs, answers, "anthropic", "claude-test")


def test_win_rate_arithmetic_exact():
    df = _frame(
        {
            "q1": [("A", "B")],  # win
            "q2": [("A", "B")],  # win
            "q3": [("A", "A")],  # flip → tie
            "q4": [("B", "A")],  # loss
            "q5": [("A", "unparseable")],  # missing (unparseable)
            "q6": [("missing", "missing")],  # not judged (budget)
        }
    )
    assert df["outcome"].tolist() == ["win", "win", "tie", "loss", "missing", "missing"]
    assert set(df["backend"]) == {"anthropic"} and set(df["judge_model"]) == {"claude-test"}
    m = win_rate_metrics(df, n_boot=200, seed=0)["gem"]
    assert m["n_comparisons"] == 6 and m["n_valid"] == 4 and m["n_missing"] == 2
    assert m["n_unparseable"] == 1 and m["n_not_judged"] == 1 and m["n_flips"] == 1
    assert (m["n_win"], m["n_tie"], m["n_loss"]) == (2, 1, 1)
    assert m["win_rate"] == 0.5 and m["tie_rate"] == 0.25 and m["loss_rate"] == 0.25
    assert m["score"] == 0.625
    lo, hi = m["win_rate_ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0 and lo < hi


def test_rates_nan_when_nothing_valid():
    r = rates(["missing", "missing"])
    assert all(math.isnan(r[k]) for k in ("win", "tie", "loss", "score"))


def test_bootstrap_resamples_inputs_and_is_seeded():
    all_win = _frame({"q1": [("A", "B")], "q2": [("A", "B")], "q3": [("A", "B")]})
    ci = bootstrap_ci(all_win, 100, 0, "gem")
    assert ci["win"] == (1.0, 1.0) and ci["loss"] == (0.0, 0.0)
    # one input with 3 wins, one with 1 loss: each resample is a mix of the two inputs' counts,
    # so the win share can only be 0, 3/4 or 1 (input-level resampling, not comparison-level).
    df = _frame({"q1": [("A", "B")] * 3, "q2": [("B", "A")]})
    assert bootstrap_ci(df, 500, 3, "gem") == bootstrap_ci(df, 500, 3, "gem")
    lo, hi = bootstrap_ci(df, 500, 3, "gem")["win"]
    assert (lo, hi) == (0.0, 1.0)  # 1/4 of resamples are q2 twice, 1/4 q1 twice


def _formula(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def test_pass_at_k_row_formula():
    row = pass_at_k_row(10, 3)
    assert row["pass_at_1"] == pytest.approx(0.3)
    assert row["pass_at_2"] == pytest.approx(1 - (7 * 6) / (10 * 9))
    for k in range(1, 11):
        assert row[f"pass_at_{k}"] == pytest.approx(_formula(10, 3, k))
    assert row["pass_at_8"] == 1.0  # n - c = 7 < 8
    short = pass_at_k_row(2, 1)
    assert short["pass_at_1"] == pytest.approx(0.5) and short["pass_at_2"] == 1.0
    assert all(math.isnan(short[f"pass_at_{k}"]) for k in range(3, 11))
    assert all(math.isnan(v) for v in pass_at_k_row(0, 0).values())


def test_pass_table_counts_only_judged_samples():
    rows = pd.DataFrame(
        {
            "system": ["gem"] * 4 + ["baseline"] * 2,
            "id": ["q1"] * 4 + ["q1"] * 2,
            "sample": [0, 1, 2, 3, 0, 1],
        }
    )
    verdicts = ["yes", "no", "unparseable", "missing", "no", "no"]
    t = pass_table(rows, verdicts, "local").set_index("system")
    assert t.loc["gem", "n_samples"] == 2 and t.loc["gem", "n_pass"] == 1
    assert t.loc["gem", "pass_at_1"] == pytest.approx(0.5)
    assert t.loc["gem", "pass_at_2"] == 1.0
    assert math.isnan(t.loc["gem", "pass_at_3"])
    assert t.loc["baseline", "pass_at_1"] == 0.0 and t.loc["baseline", "pass_at_2"] == 0.0
    assert set(t["backend"]) == {"local"}


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    d = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert d == 0.0  # a date in the past: no wait
    rng = random.Random(0)
    delays = [backoff_delay(i, 1.0, 8.0, rng, None) for i in range(6)]
    assert all(0.0 <= d <= min(8.0, 2.0**i) for i, d in enumerate(delays))
    assert backoff_delay(0, 1.0, 8.0, random.Random(0), 30.0) == 30.0  # retry-after is a floor


def _judgments(outcomes: dict[str, list[str]]) -> pd.DataFrame:
    rows = [
        {"id": f"q{i}", "opponent": opp, "outcome": o, "backend": "local", "judge_model": "m"}
        for opp, outs in outcomes.items()
        for i, o in enumerate(outs)
    ]
    return pd.DataFrame(rows)


def test_table_and_figure_show_score_counts_and_say_when_uninformative():
    from lib import figures
    from lib.config import params_for
    from lib.report import rows as report
    from lib.stats import judge_summary

    # gem: every pair flipped with the order -> 6 ties, nothing decided: no information, even
    # though its score is exactly 0.5 with a zero-width CI. baseline: 3 wins, 1 tie, 1 loss and one
    # missing -> (3 + 0.5) / 5 = 0.7.
    j = _judgments(
        {
            "gem": ["tie"] * 6,
            "baseline": ["win", "win", "win", "tie", "loss", "missing"],
        }
    )
    summary = judge_summary(
        j, params_for("stats", bootstrap=200, alpha=0.05, ci_format="halfwidth", decimals=3), 0
    )
    assert summary["opponents"]["gem"]["score"] == 0.5
    assert summary["opponents"]["baseline"]["score"] == pytest.approx(0.7)
    cells = dict(
        zip(SYSTEMS, report._judge_cells({"judge": summary}, 0.05, 3, "halfwidth"), strict=True)
    )
    assert cells["gem"].text == "uninformative: all 6 ties"
    assert cells["baseline"].text.startswith("0.700 ±")
    assert cells["baseline"].text.endswith("(3/1/1, 1 missing)")
    assert cells["zero_shot"].text is None  # never judged: n/a, not 0
    labels = {r.opponent: figures._judge_label(r) for r in figures.judge_frame(j).itertuples()}
    assert labels["gem"] == "vs GEM: uninformative (all 6 ties)"
    assert labels["baseline"] == "vs Baseline LoRA: 0.70 (3/1/1)"
