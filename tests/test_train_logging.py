"""lib.train.logging.step_split: the per-step wall-time split printed beside each val point."""

from __future__ import annotations

from lib.train.logging import step_split


def test_step_split_is_the_mean_per_step_of_each_summed_time():
    # 4 steps: 18 s in all → 4.50 s/step; sampling 8.4 s → 2.10; reward 4.8 s → 1.20.
    since = {"step_time": 18.0, "time_sampling": 8.4, "time_reward": 4.8, "steps": 4.0}
    assert step_split(since) == "4.50 s/step over 4 steps: sampling 2.10, reward 1.20"


def test_step_split_without_steps_or_parts():
    assert step_split({}) == "no step timed"
    assert step_split({"step_time": 1.5, "steps": 3.0}) == "0.50 s/step over 3 steps"
