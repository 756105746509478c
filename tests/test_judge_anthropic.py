"""The Claude backend through the real SDK against a fake Messages API on 127.0.0.1.

The fake server (tests/fakes.py) plays a script of behaviours (429 with retry-after, 500, a stall
past the client timeout, a malformed body, a dropped connection) and counts every request, so
retries, budget stops and "a rerun pays nothing" are asserted exactly. No network is used.
"""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest
import yaml

from lib.config import merged_params, params_for
from lib.judge.anthropic_backend import AnthropicJudge, JudgeError
from lib.judge.params import JudgeParams
from lib.judge.prompts import Question
from tests.fakes import CANARY, FakeAPI, judge_argv, write_generations


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    server = FakeAPI()
    yield server
    server.close()


def _params(api: FakeAPI, **kw) -> JudgeParams:
    base = {
        "backend": "anthropic",
        "model": "claude-test",
        "base_url": api.url,
        "timeout_s": 0.3,
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
        "concurrency": 1,  # the fake server's scripted replies go to questions in order
    }
    base.update(kw)
    return params_for("judge", **base)


class Sleeps(list):
    def __call__(self, s: float) -> None:
        self.append(s)


def _qs(n: int) -> list[Question]:
    return [Question("sys", f"question {i}", ("A", "B", "tie")) for i in range(n)]


def _judge(api, tmp_path, **kw):
    sleeps = Sleeps()
    return AnthropicJudge(_params(api, **kw), tmp_path / "cache", sleep=sleeps), sleeps


def test_normal_answers_are_parsed_cached_and_sent_with_the_key(api, tmp_path):
    judge, sleeps = _judge(api, tmp_path)
    api.script = [("ok", "Verdict: B\nReason: clearer"), ("ok", "Verdict: tie\nReason: same")]
    out = judge.ask(_qs(2))
    assert [(a.verdict, a.reason) for a in out] == [("B", "clearer"), ("tie", "same")]
    assert len(api.requests) == 2 and sleeps == []
    assert all(k is not None and CANARY in k for k in api.keys)
    req = api.requests[0]
    assert req["model"] == "claude-test" and "temperature" not in req
    assert req["system"] == "sys" and req["messages"][0]["content"] == "question 0"
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2
    u = judge.describe()
    assert u["calls"] == 2 and u["input_tokens"] == 200 and u["output_tokens"] == 20
    assert u["cost_usd_estimate"] == pytest.approx((200 * 3.0 + 20 * 15.0) / 1e6)


def test_429_honours_retry_after(api, tmp_path):
    judge, sleeps = _judge(api, tmp_path)
    api.script = [("status", 429, [("retry-after", "7")]), ("ok",)]
    assert judge.ask(_qs(1))[0].verdict == "A"
    assert len(api.requests) == 2
    assert sleeps == [7.0]  # the server's wait, not the (tiny) backoff
    assert judge.usage.retries == 1 and judge.usage.errors == {"http_429": 1}


def test_500_is_retried_with_jittered_backoff(api, tmp_path):
    judge, sleeps = _judge(api, tmp_path)
    api.script = [("status", 500), ("status", 503), ("ok",)]
    assert judge.ask(_qs(1))[0].verdict == "A"
    assert len(api.requests) == 3 and len(sleeps) == 2
    assert 0.0 <= sleeps[0] <= 0.01 and 0.0 <= sleeps[1] <= 0.02


def test_timeout_is_retried(api, tmp_path):
    judge, sleeps = _judge(api, tmp_path, timeout_s=0.1)
    api.script = [("stall", 0.6), ("ok",)]
    assert judge.ask(_qs(1))[0].verdict == "A"
    assert judge.usage.errors == {"timeout": 1} and len(sleeps) == 1
    assert len(api.requests) == 2


def test_malformed_body_and_dropped_connection_are_retried(api, tmp_path):
    judge, sleeps = _judge(api, tmp_path)
    api.script = [("badjson",), ("nocontent",), ("drop",), ("ok",)]
    assert judge.ask(_qs(1))[0].verdict == "A"
    assert len(api.requests) == 4
    assert judge.usage.errors == {"malformed_body": 2, "connection": 1}
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1  # only the good answer cached


def test_unparseable_answer_is_asked_once_more_then_recorded(api, tmp_path):
    judge, _ = _judge(api, tmp_path)
    api.script = [("ok", "Both are lovely."), ("ok", "Still cannot say."), ("ok", "gibberish")]
    api.answer = lambda body: "Verdict: B\nReason: ok"
    out = judge.ask(_qs(2))
    assert out[0].verdict == "unparseable"
    assert out[1].verdict == "B"  # "gibberish", then the re-ask got a verdict
    assert out[1].reason == "ok"
    assert len(api.requests) == 4


def test_unparseable_then_good_reask(api, tmp_path):
    judge, _ = _judge(api, tmp_path)
    api.script = [("ok", "Hmm."), ("ok", "Verdict: B\nReason: fine")]
    assert judge.ask(_qs(1))[0].verdict == "B"
    assert len(api.requests) == 2
    # A rerun replays both cached attempts and pays nothing.
    again, _ = _judge(api, tmp_path)
    assert again.ask(_qs(1))[0].verdict == "B"
    assert len(api.requests) == 2 and again.usage.calls == 0 and again.usage.cache_hits == 2


def test_retries_exhausted_stops_cleanly(api, tmp_path):
    judge, sleeps = _judge(api, tmp_path, max_retries=2)
    api.script = [("status", 500)] * 3
    out = judge.ask(_qs(3))
    assert [a.verdict for a in out] == ["missing"] * 3
    assert len(api.requests) == 3 and len(sleeps) == 2  # no calls after the stop
    assert judge.usage.stopped == "api_unavailable"


def test_non_retryable_error_raises_without_the_key(api, tmp_path):
    judge, _ = _judge(api, tmp_path)
    api.script = [("status", 401)]
    with pytest.raises(JudgeError) as err:
        judge.ask(_qs(1))
    assert "401" in str(err.value) and CANARY not in str(err.value)
    assert len(api.requests) == 1


def test_missing_key_is_an_error(api, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    judge, _ = _judge(api, tmp_path)
    with pytest.raises(JudgeError, match="ANTHROPIC_API_KEY"):
        judge.ask(_qs(1))
    assert api.requests == []


def test_call_budget_stops_and_rerun_resumes(api, tmp_path):
    judge, _ = _judge(api, tmp_path, max_calls=3)
    out = judge.ask(_qs(5))
    assert [a.verdict for a in out] == ["A", "A", "A", "missing", "missing"]
    assert len(api.requests) == 3 and judge.usage.stopped == "max_calls"
    # A resumed run with a fresh budget reuses the 3 cached answers and asks only the rest.
    resumed, _ = _judge(api, tmp_path, max_calls=3)
    assert [a.verdict for a in resumed.ask(_qs(5))] == ["A"] * 5
    assert len(api.requests) == 5 and resumed.usage.cache_hits == 3
    # A third run makes zero calls.
    third, _ = _judge(api, tmp_path, max_calls=0)
    assert [a.verdict for a in third.ask(_qs(5))] == ["A"] * 5
    assert len(api.requests) == 5 and third.usage.stopped is None


def test_cost_budget_from_token_usage(api, tmp_path):
    api.usage = (1_000_000, 0)  # $1 a call at $1 per million input tokens
    judge, _ = _judge(api, tmp_path, price_per_mtok_input=1.0, max_cost_usd=2.0)
    out = judge.ask(_qs(4))
    assert [a.verdict for a in out] == ["A", "A", "missing", "missing"]
    assert len(api.requests) == 2 and judge.usage.stopped == "max_cost_usd"
    assert judge.describe()["cost_usd_estimate"] == 2.0


def test_temperature_is_sent_when_set(api, tmp_path):
    judge, _ = _judge(api, tmp_path, temperature=0.0)
    judge.ask(_qs(1))
    assert api.requests[0]["temperature"] == 0.0


def test_cache_key_depends_on_model_and_prompt(api, tmp_path):
    judge, _ = _judge(api, tmp_path)
    judge.ask(_qs(1))
    other, _ = _judge(api, tmp_path, model="claude-other")
    other.ask(_qs(1))
    assert len(api.requests) == 2
    again, _ = _judge(api, tmp_path)
    again.ask([Question("sys", "question 0 changed", ("A", "B", "tie"))])
    assert len(api.requests) == 3


# --- the stage end to end with the anthropic backend ---------------------------------------


def _prefers_polychromic(body) -> str:
    text = body["messages"][0]["content"]
    a = text.index("Response A:")
    b = text.index("Response B:")
    poly = text.index("[polychromic]")
    return "Verdict: A\nReason: x" if a < poly < b else "Verdict: B\nReason: x"


def test_stage_anthropic_end_to_end_no_key_leak_and_free_rerun(api, tmp_path, capsys):
    import stages.judge

    gen_dir = tmp_path / "gens"
    write_generations(gen_dir)
    params = {
        "seed": 7,
        "model": {"base": "tiny-random", "device": "cpu"},
        "judge": {
            "backend": "auto",  # the key is set, so auto → anthropic
            "model": "claude-test",
            "base_url": api.url,
            "timeout_s": 0.5,
            "max_retries": 2,
            "backoff_base_s": 0.001,
            "backoff_max_s": 0.002,
            "bootstrap": 50,
            "pass_checker": True,
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged_params(params)))
    api.answer = lambda body: (
        "Verdict: yes\nReason: ok" if "rubric" in body["system"] else _prefers_polychromic(body)
    )
    api.script = [("status", 429, [("retry-after", "0.01")]), ("drop",)]
    out_dir = tmp_path / "out"
    argv = judge_argv(
        gen_dir,
        out_dir / "judge" / "comparisons.parquet",
        out_dir / "metrics" / "judge.json",
        out_dir / "judge" / "pass_at_k.parquet",
        tmp_path / "cache",
        tmp_path / "params.yaml",
    )
    stages.judge.main(argv)
    n_pair_calls = 2 * 4 * 2  # ids × opponents × orders
    n_pass_calls = 5 * 2 * 2  # systems × ids × samples
    assert len(api.requests) == n_pair_calls + n_pass_calls + 2  # + the 429 and the drop

    comp = pd.read_parquet(out_dir / "judge" / "comparisons.parquet")
    assert len(comp) == 8 and set(comp["outcome"]) == {"win"}
    assert set(comp["backend"]) == {"anthropic"} and set(comp["judge_model"]) == {"claude-test"}
    assert set(comp["verdict_first"]) == {"A"} and set(comp["verdict_second"]) == {"B"}
    metrics = json.loads((out_dir / "metrics" / "judge.json").read_text())
    assert metrics["backend"] == "anthropic"
    assert metrics["opponents"]["gem"]["win_rate"] == 1.0
    assert metrics["opponents"]["gem"]["win_rate_ci95"] == [1.0, 1.0]
    assert metrics["usage"]["retries"] == 2
    passes = pd.read_parquet(out_dir / "judge" / "pass_at_k.parquet")
    assert len(passes) == 10 and set(passes["pass_at_1"]) == {1.0}
    assert passes["pass_at_3"].isna().all()  # n = 2 samples

    # The key never reaches a file or the console.
    written = [p for d in (out_dir, tmp_path / "cache") for p in d.rglob("*") if p.is_file()]
    assert len(written) > n_pair_calls
    for p in written:
        assert CANARY.encode() not in p.read_bytes(), p
    captured = capsys.readouterr()
    assert CANARY not in captured.out and CANARY not in captured.err

    # A rerun makes zero new calls and reproduces the outputs exactly.
    before = len(api.requests)
    first = (out_dir / "judge" / "comparisons.parquet").read_bytes()
    stages.judge.main(argv)
    assert len(api.requests) == before
    assert (out_dir / "judge" / "comparisons.parquet").read_bytes() == first
    rerun = json.loads((out_dir / "metrics" / "judge.json").read_text())
    assert rerun["usage"]["calls"] == 0 and rerun["opponents"] == metrics["opponents"]


# --- one request per cache key; an incomplete run is never a success -----------------------


def test_identical_concurrent_questions_make_exactly_one_call(api, tmp_path):
    """8 threads ask the same question while the first request is still in flight (the fake
    server stalls its answer): one HTTP request, all 8 get its answer, 7 waited for it."""
    judge, _ = _judge(api, tmp_path, timeout_s=5.0)
    release = threading.Event()
    api.answer = lambda body: (release.wait(5), "Verdict: B\nReason: in flight")[1]
    results: list = [None] * 8

    def ask(i):
        results[i] = judge.ask(_qs(1))[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not judge._in_flight and time.monotonic() < deadline:
        time.sleep(0.01)  # the first request is on the wire
    time.sleep(0.3)  # the other threads reach the cache miss and wait on it
    release.set()
    for t in threads:
        t.join(10)
    assert len(api.requests) == 1
    assert [(a.verdict, a.reason) for a in results] == [("B", "in flight")] * 8
    assert judge.usage.in_flight_waits + judge.usage.cache_hits == 7


def test_concurrent_ask_keeps_question_order_and_dedups_repeats(api, tmp_path):
    judge, _ = _judge(api, tmp_path, concurrency=4)
    api.answer = lambda body: (
        f"Verdict: {'A' if body['messages'][0]['content'][-1] in '02' else 'B'}"
    )
    qs = _qs(4) + _qs(4)  # every question twice
    assert [a.verdict for a in judge.ask(qs)] == ["A", "B", "A", "B"] * 2
    assert len(api.requests) == 4


def _stage_params(tmp_path, api, **judge):
    """The repo's params.yaml with the judge pointed at the fake API (every other key as committed)."""
    from pathlib import Path

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["seed"] = 7
    params["model"].update(base="tiny-random", device="cpu")
    params["judge"].update(
        backend="anthropic",
        model="claude-test",
        base_url=api.url,
        timeout_s=0.5,
        max_retries=0,
        backoff_base_s=0.001,
        backoff_max_s=0.002,
        bootstrap=20,
        concurrency=1,
        pass_checker=False,
        **judge,
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_stage_fails_on_missing_answers_and_the_rerun_pays_only_the_rest(api, tmp_path):
    """Issue 17: the budget runs out after 5 of 16 questions (2 ids × 4 opponents × 2 orders). The
    stage must fail without writing outputs (DVC would lock them), keep the 5 paid answers, and a
    rerun with budget asks exactly the 11 others."""
    import stages.judge
    from lib.judge.anthropic_backend import JudgeIncomplete

    gen_dir = tmp_path / "gens"
    write_generations(gen_dir)
    _stage_params(tmp_path, api, max_calls=5)
    out = tmp_path / "out"
    argv = judge_argv(
        gen_dir,
        out / "comparisons.parquet",
        out / "judge.json",
        out / "pass.parquet",
        tmp_path / "cache",
        tmp_path / "params.yaml",
    )
    with pytest.raises(JudgeIncomplete, match=r"6 judgments left open \(stopped: max_calls\)"):
        stages.judge.main(argv)
    assert len(api.requests) == 5 and not out.exists()
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 5

    _stage_params(tmp_path, api, max_calls=100)
    stages.judge.main(argv)
    assert len(api.requests) == 16
    metrics = json.loads((out / "judge.json").read_text())
    assert metrics["n_missing"] == 0 and metrics["usage"]["cache_hits"] == 5


def test_stage_allow_missing_writes_and_counts_them(api, tmp_path):
    import stages.judge

    gen_dir = tmp_path / "gens"
    write_generations(gen_dir)
    _stage_params(tmp_path, api, max_calls=5, allow_missing=True)
    out = tmp_path / "out"
    stages.judge.main(
        judge_argv(
            gen_dir,
            out / "comparisons.parquet",
            out / "judge.json",
            out / "pass.parquet",
            tmp_path / "cache",
            tmp_path / "params.yaml",
        )
    )
    metrics = json.loads((out / "judge.json").read_text())
    # 5 answers fill 2 comparisons (both orders) and half of a third: 8 − 2 = 6 missing.
    assert metrics["n_missing"] == 6 and metrics["n_not_asked"] == 6
    assert metrics["usage"]["stopped"] == "max_calls"
