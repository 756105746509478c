"""DVCLive curves of a training run: `train/<key>` rows every `train.log_every` steps.

Each row is the mean of a key over the steps since the last row on which it was measured (the
per-term gradient norms are measured only every `loss.grad_norm_every` steps). The rows logged so
far travel in the checkpoint: `dvc repro` deletes the curves before a rerun, and a kill can leave
rows past the checkpoint, so a resumed run rebuilds its curves from there (never from disk, which
loses rows or repeats them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

# Keys of a step's metrics that become curves (the time_* split stays in the bench). Wall-clock
# keys (step_time, gpu_peak_gib) stay out: the curves are a DVC output, and a time in them would
# give every run a new hash in dvc.lock. The stage prints them (and `scripts/timed_repro.sh`
# records stage times in metrics/stage_times.tsv).
LOGGED = (
    "loss",
    "ce",
    "diversity",
    "reward",
    "kl",
    "grad_norm",
    "grad_norm_ce",
    "grad_norm_diversity",
    "grad_norm_kl",
    "grad_norm_gem",
    "onpolicy_gap",
)


class TrainLog:
    def __init__(
        self, live_dir: str | Path | None, data_report: Any, state: dict[str, Any] | None = None
    ):
        state = state or {}
        self.history: list[tuple[int, dict[str, float]]] = list(state.get("history", []))
        self.sums: dict[str, float] = dict(state.get("sums", {}))
        self.counts: dict[str, int] = dict(state.get("counts", {}))
        self.live = None
        if live_dir is None:
            return
        from dvclive import Live

        self.live = Live(dir=str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=None)
        for k, v in dataclasses.asdict(data_report).items():
            self.live.log_metric(f"data/{k}", v, plot=False)
        for step, row in self.history:
            self._write(step, row)
        if self.history:
            self.live.make_summary()

    def add(self, metrics: dict[str, float]) -> None:
        for k in LOGGED:
            if k in metrics:
                self.sums[k] = self.sums.get(k, 0.0) + metrics[k]
                self.counts[k] = self.counts.get(k, 0) + 1

    def row(self, step: int, extra: dict[str, float] | None = None) -> None:
        """Write the pending means as the row of `step`, with `extra` values as they are (the val
        curves: keys with their own prefix, `val/ce`)."""
        row = {k: v / self.counts[k] for k, v in self.sums.items()}
        row.update(extra or {})
        self.sums, self.counts = {}, {}
        self.history.append((step, row))
        if self.live is not None:
            self._write(step, row)
            self.live.make_summary()

    def _write(self, step: int, row: dict[str, float]) -> None:
        assert self.live is not None
        self.live.step = step
        for k, v in row.items():
            self.live.log_metric(k if "/" in k else f"train/{k}", v)

    def state(self) -> dict[str, Any]:
        return {"history": list(self.history), "sums": dict(self.sums), "counts": dict(self.counts)}

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


def step_split(since: dict[str, float]) -> str:
    """Mean wall seconds a step over `since` (summed `step_time`, `time_*` and `steps`), for the
    log line printed at each val point and at the end of training:
    "3.03 s/step over 200 steps: sampling 1.86, scoring 0.26, fwd_bwd 0.89; reward 0.78 beside
    the forward". `reward` is the reward's own wall time (the sandbox on code), which runs on
    other threads while the forward does, so it is not a part of the sum; `scoring` is what the
    step waited for it. A part a system never spends (baseline and GEM draw no samples) is left
    out, so the listed parts of a step add up to its time."""
    n = since.get("steps", 0.0)
    if n <= 0:
        return "no step timed"
    mean = {
        k.removeprefix("time_"): v / n for k, v in since.items() if k.startswith("time_") and v > 0
    }
    beside = mean.pop("reward", None)
    head = f"{since.get('step_time', 0.0) / n:.2f} s/step over {n:.0f} steps"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in mean.items())
    tail = f"; reward {beside:.2f} beside the forward" if beside is not None else ""
    return head + (": " + parts if parts else "") + tail
