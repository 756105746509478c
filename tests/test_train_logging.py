"""lib.train.logging.step_split: the per-step wall-time split printed beside each val point."""

from __future__ import annotations

from lib.train.logging import step_split


def test_step_split_is_the_mean_per_step_of_each_summed_time():
    # 4 steps: 18 s in all → 4.50 s/step; sampling 8.4 s → 2.10; scoring 1.2 s → 0.30;
    # fwd_bwd 8.4 s → 2.10 (2.10 + 0.30 + 2.10 = 4.50: the listed parts add up to the step);
    # reward 4.8 s → 1.20, on other threads while the forward runs, so named apart from the sum.
    since = {
        "step_time": 18.0,
        "time_sampling": 8.4,
        "time_reward": 4.8,
        "time_scoring": 1.2,
        "time_fwd_bwd": 8.4,
        "steps": 4.0,
    }
    assert step_split(since) == (
        "4.50 s/step over 4 steps: sampling 2.10, scoring 0.30, fwd_bwd 2.10;"
        " reward 1.20 beside the forward"
    )


def test_step_split_leaves_out_the_parts_a_system_never_spends():
    # Baseline's H200 line read "sampling 0.00, reward 0.00, scoring 0.00, fwd_bwd 0.49".
    since = {
        "step_time": 98.0,
        "time_sampling": 0.0,
        "time_reward": 0.0,
        "time_scoring": 0.0,
        "time_fwd_bwd": 96.0,
        "steps": 200.0,
    }
    assert step_split(since) == "0.49 s/step over 200 steps: fwd_bwd 0.48"


def test_step_split_without_steps_or_parts():
    assert step_split({}) == "no step timed"
    assert step_split({"step_time": 1.5, "steps": 3.0}) == "0.50 s/step over 3 steps"
