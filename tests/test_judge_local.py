"""The offline local judge on tiny-random: exact log-probs, batching, and the stage end to end."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import yaml

from lib.config import merged_params
from lib.judge.local_backend import LocalJudge
from lib.judge.prompts import Question, pair_question
from tests.fakes import judge_argv, write_generations


def _questions():
    q = pair_question("social", "hi there", "hello!", "go away", 500)
    return [
        q,
        # multi-token choices take the one-row-per-choice path; mixed into the same batches
        Question(q.system, q.user, ("A", "B", "both equally unhelpful")),
        pair_question("social", "what's up?", "not much, you?", "The quick brown fox " * 8, 500),
        pair_question("creative", "a haiku on rain", "rain taps the window", "rain", 500),
    ]


def test_choice_logprobs_match_an_unpadded_forward_pass(tiny_model):
    model, tok = tiny_model
    judge = LocalJudge(model, tok, "tiny-random", batch_size=4)
    qs = _questions()
    got = judge.choice_logprobs(qs)
    for q, lps in zip(qs, got, strict=True):
        prompt = tok(judge.prompt_text(q), add_special_tokens=False)["input_ids"]
        for choice, lp in zip(q.choices, lps, strict=True):
            cids = tok(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + cids])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
            want = sum(float(logp[len(prompt) + j - 1, cids[j]]) for j in range(len(cids)))
            assert lp == pytest.approx(want, abs=1e-4)


def test_batching_does_not_change_scores(tiny_model):
    model, tok = tiny_model
    qs = _questions()
    one = LocalJudge(model, tok, "tiny-random", batch_size=1).choice_logprobs(qs)
    many = LocalJudge(model, tok, "tiny-random", batch_size=9).choice_logprobs(qs)
    for a, b in zip(one, many, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_ask_labels_and_picks_the_argmax(tiny_model):
    model, tok = tiny_model
    judge = LocalJudge(model, tok, "tiny-random", batch_size=8)
    qs = _questions()
    lps = judge.choice_logprobs(qs)
    answers = judge.ask(qs)
    for q, a, lp in zip(qs, answers, lps, strict=True):
        assert a.verdict == q.choices[max(range(3), key=lambda i: lp[i])]
        assert a.reason.startswith("local log-prob judge: p(A)=")
        probs = [float(x.split("=")[1]) for x in a.reason.split(": ", 1)[1].split(", ")]
        assert len(probs) == 3
        assert sum(probs) == pytest.approx(1.0, abs=2e-3)
    d = judge.describe()
    assert d["backend"] == "local" and d["judge_model"] == "local:tiny-random"
    assert "LOCAL" in d["note"]


def _write_generations(gen_dir, ids=("s1", "s2", "c1"), n=2):
    write_generations(
        gen_dir,
        ids,
        n,
        domain=lambda i: "creative" if i.startswith("c") else "social",
        input="Tell me something about {id}.",
        output="{system} answer {sample} about {id}",
        reference="Sure.",
        seed_base=0,
    )


def test_stage_local_backend_tiny_random(tmp_path, monkeypatch):
    import stages.judge
    from lib.io import read_parquet
    from lib.schemas import JUDGE_PASS, JUDGMENTS, SYSTEMS

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # auto → local
    gen_dir = tmp_path / "gens"
    _write_generations(gen_dir)
    params = {
        "seed": 3,
        "model": {"base": "tiny-random", "device": "cpu"},
        "judge": {"backend": "auto", "bootstrap": 100, "pass_checker": True},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged_params(params)))
    out = tmp_path / "out"
    argv = judge_argv(
        gen_dir,
        out / "comparisons.parquet",
        out / "judge.json",
        out / "pass_at_k.parquet",
        tmp_path / "cache",
        tmp_path / "params.yaml",
    )
    stages.judge.main(argv)
    comp = read_parquet(out / "comparisons.parquet", JUDGMENTS)
    assert len(comp) == 3 * 4  # ids × opponents, one draw each
    assert set(comp["opponent"]) == {"zero_shot", "few_shot", "baseline", "gem"}
    assert set(comp["backend"]) == {"local"} and set(comp["judge_model"]) == {"local:tiny-random"}
    assert set(comp["verdict_first"]) <= {"A", "B", "tie"}
    assert comp["outcome"].isin(["win", "tie", "loss"]).all()
    assert comp["reason_first"].str.startswith("local log-prob judge").all()
    m = json.loads((out / "judge.json").read_text())
    assert m["backend"] == "local" and "LOCAL" in m["label"]
    for opp, r in m["opponents"].items():
        assert r["n_valid"] == 3, opp
        assert r["win_rate"] + r["tie_rate"] + r["loss_rate"] == pytest.approx(1.0)
        lo, hi = r["win_rate_ci95"]
        assert lo <= r["win_rate"] <= hi
    passes = read_parquet(out / "pass_at_k.parquet", JUDGE_PASS)
    assert len(passes) == len(SYSTEMS) * 3 and (passes["n_samples"] == 2).all()
    assert set(passes["backend"]) == {"local"}
    assert passes["pass_at_3"].isna().all()
    for r in passes.itertuples():
        want = {0: 0.0, 1: 0.5, 2: 1.0}[r.n_pass]
        assert math.isclose(r.pass_at_1, want)
    assert not (tmp_path / "cache").exists()  # the local judge caches nothing

    # Same params and seed → identical outputs.
    first = comp.copy()
    stages.judge.main(argv)
    pd.testing.assert_frame_equal(read_parquet(out / "comparisons.parquet", JUDGMENTS), first)
