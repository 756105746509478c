"""The judge under injected API faults and SIGKILL: every comparison judged exactly once.

The fake Messages API (127.0.0.1 only) fails ~30% of requests at random with 429 / 500 / 503 / 529,
stalls past the client timeout, dropped connections and malformed bodies. See
tests/reliability/faults.py for what each scenario asserts; the slow variants sweep more seeds.
"""

from __future__ import annotations

import pytest

from tests.reliability import faults as F


def test_random_faults_every_question_answered_once(tmp_path):
    out = F.judge_under_faults(tmp_path, seed=0)
    assert out["faults"] > 0.15 * out["requests"]  # faults were really injected
    assert out["lost"] == 0 and out["duplicates"] == 0


def test_outage_stops_cleanly_and_a_rerun_completes_paying_once(tmp_path):
    out = F.judge_outage_then_rerun(tmp_path, seed=0)
    assert 0 < out["answered_before_stop"] < out["questions"]


@pytest.mark.e2e
def test_judge_sigkill_resumes_from_cache(tmp_path):
    out = F.judge_killed_and_resumed(tmp_path, seed=0)
    assert out["repaid"] <= 1 and out["lost"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_random_faults_sweep(tmp_path, seed):
    F.judge_under_faults(tmp_path, seed=seed, fail_rate=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
def test_judge_sigkill_sweep(tmp_path, seed):
    F.judge_killed_and_resumed(tmp_path, seed=seed)
