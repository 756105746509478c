"""The judge stage against a fake Messages API that fails a fraction of calls at random.

`FaultScript` plugs into the FakeAPI of tests/fakes.py as its `script`: every
request draws its behaviour from a seeded RNG (ok, 429 with retry-after, 500, 503, 529, a stall
past the client timeout, a dropped connection, a malformed 200 body) and the draws are recorded,
so the test knows exactly how many answers the server delivered.

`judge_under_faults` runs `stages.judge.main` in-process; `judge_killed_and_resumed` runs it as a
subprocess, SIGKILLs it after a random number of delivered answers and runs it again. Both return
the counts the reliability report records and raise AssertionError on any lost or duplicate item.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import yaml

from lib.config import merged_params
from lib.schemas import SYSTEMS
from tests.fakes import CANARY, FakeAPI, anthropic_key, judge_argv, write_generations

ROOT = Path(__file__).resolve().parents[2]

FAULTS = (
    ("status", 429, [("retry-after", "0.001")]),
    ("status", 500),
    ("status", 503),
    ("status", 529),
    ("stall", 0.4),  # past timeout_s below: the client gives up, nothing is delivered
    ("drop",),
    ("badjson",),
)


class FaultScript(list):
    """A FakeAPI script that never runs out: each pop draws ok or a random fault."""

    def __init__(self, seed: int, fail_rate: float, outage_from: int | None = None):
        super().__init__([None])  # non-empty, so FakeAPI always asks us
        self.rng = random.Random(seed)
        self.fail_rate = fail_rate
        # From this request on every call fails until `outage_from` is reset to None.
        self.outage_from = outage_from
        self.served: list[str] = []

    def pop(self, index: int = -1):
        down = self.outage_from is not None and len(self.served) >= self.outage_from
        step = self.rng.choice(FAULTS) if down or self.rng.random() < self.fail_rate else ("ok",)
        self.served.append(step[0] if step[0] != "status" else f"http_{step[1]}")
        return step

    @property
    def delivered(self) -> int:
        return self.served.count("ok")

    @property
    def faults(self) -> int:
        return len(self.served) - self.delivered


def verdict_for(body: dict) -> str:
    """A deterministic, mixed verdict from the prompt alone (so reruns agree)."""
    h = int(hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest(), 16)
    if "rubric" in body["system"]:
        return f"Verdict: {('yes', 'no')[h % 2]}\nReason: r{h % 97}"
    return f"Verdict: {('A', 'B', 'tie')[h % 3]}\nReason: r{h % 97}"


def start_api(script: FaultScript) -> FakeAPI:
    api = FakeAPI()
    api.script = script
    api.answer = verdict_for
    return api


def write_inputs(root: Path, n_ids: int, samples: int, url: str, **judge) -> tuple[Path, list[str]]:
    """Generations for every system and a params.yaml pointing the judge at `url`; the argv."""
    ids = [f"social-{i:03d}" for i in range(n_ids)]
    gdir = root / "generations"
    write_generations(gdir, ids, samples)
    params = {
        "seed": 11,
        "model": {"base": "tiny-random", "device": "cpu"},
        "judge": {
            "backend": "auto",  # the key is set: auto → anthropic
            "model": "claude-fault-test",
            "base_url": url,
            "timeout_s": 0.2,
            "max_retries": 6,
            "backoff_base_s": 0.001,
            "backoff_max_s": 0.004,
            "bootstrap": 50,
            "samples_per_input": 2,
            "pass_checker": True,
            # One request at a time: the kill and outage bounds count answers in flight as one
            # (concurrent identical questions are tests/test_judge_anthropic's).
            "concurrency": 1,
            **judge,
        },
    }
    # Every key is required: the repo's params.yaml under these overrides.
    params = merged_params(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    argv = judge_argv(
        gdir,
        root / "out" / "comparisons.parquet",
        root / "out" / "judge.json",
        root / "out" / "pass_at_k.parquet",
        root / "cache",
        root / "params.yaml",
    )
    return root, argv


def n_questions(n_ids: int, samples: int) -> int:
    pairs = n_ids * 4 * min(2, samples) * 2  # ids × opponents × draws × orders
    return pairs + len(SYSTEMS) * n_ids * samples  # + pass checker: one per sample


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "cache").rglob("*.json"))


def _check_outputs(root: Path, n_ids: int, samples: int) -> dict:
    comp = pd.read_parquet(root / "out" / "comparisons.parquet")
    metrics = json.loads((root / "out" / "judge.json").read_text())
    assert len(comp) == n_ids * 4 * min(2, samples)
    assert (comp["outcome"] != "missing").all(), comp["outcome"].value_counts().to_dict()
    assert metrics["n_missing"] == 0 and metrics["usage"]["stopped"] is None
    for p in [*(root / "out").rglob("*"), *cache_files(root)]:
        if p.is_file():
            assert CANARY.encode() not in p.read_bytes(), f"key written to {p}"
    return metrics


def judge_under_faults(
    root: Path, seed: int, fail_rate: float = 0.3, n_ids: int = 6, samples: int = 2
) -> dict:
    """One judge run under random faults: every question answered exactly once, none missing."""
    import stages.judge

    script = FaultScript(seed, fail_rate)
    api = start_api(script)
    with anthropic_key(), closing(api):
        _, argv = write_inputs(root, n_ids, samples, api.url)
        stages.judge.main(argv)
        metrics = _check_outputs(root, n_ids, samples)
        q = n_questions(n_ids, samples)
        prompts = [
            json.dumps(r["messages"])
            for r, s in zip(api.requests, script.served, strict=True)
            if s == "ok"
        ]
        assert len(cache_files(root)) == q, (len(cache_files(root)), q)
        assert script.delivered == q == len(set(prompts)), "a question was answered twice"
        u = metrics["usage"]
        assert u["calls"] == len(script.served) and u["retries"] == script.faults
        # A rerun pays for nothing and reproduces the table.
        before, first = len(script.served), (root / "out" / "comparisons.parquet").read_bytes()
        stages.judge.main(argv)
        assert len(script.served) == before
        assert (root / "out" / "comparisons.parquet").read_bytes() == first
        return {
            "questions": q,
            "requests": before,
            "faults": script.faults,
            "fault_kinds": {k: script.served.count(k) for k in sorted(set(script.served))},
            "lost": 0,
            "duplicates": 0,
        }


def judge_outage_then_rerun(root: Path, seed: int, n_ids: int = 4, samples: int = 2) -> dict:
    """An outage longer than the retries: the run stops cleanly (missing, not wrong), fails so DVC
    locks nothing, nothing is cached twice, and a rerun after the outage completes every question,
    paying each once."""
    import stages.judge
    from lib.judge.anthropic_backend import JudgeIncomplete

    q = n_questions(n_ids, samples)
    script = FaultScript(seed, fail_rate=0.3, outage_from=10)
    api = start_api(script)
    with anthropic_key(), closing(api):
        _, argv = write_inputs(root, n_ids, samples, api.url)
        try:
            stages.judge.main(argv)
        except JudgeIncomplete as e:
            assert "api_unavailable" in str(e), e
        else:
            raise AssertionError("an incomplete judge run must fail (issue 17), it exited cleanly")
        assert not (root / "out" / "judge.json").exists(), "an incomplete run wrote its outputs"
        first_delivered = script.delivered
        assert len(cache_files(root)) == first_delivered < q
        script.outage_from = None  # the API is back
        stages.judge.main(argv)
        _check_outputs(root, n_ids, samples)
        assert len(cache_files(root)) == q == script.delivered, "an answer was paid twice"
        return {
            "questions": q,
            "requests": len(script.served),
            "faults": script.faults,
            "answered_before_stop": first_delivered,
            "lost": 0,
            "duplicates": 0,
        }


def judge_killed_and_resumed(
    root: Path, seed: int, fail_rate: float = 0.3, n_ids: int = 6, samples: int = 2
) -> dict:
    """SIGKILL the judge stage (a subprocess) after a random number of delivered answers, rerun it:
    the outputs equal an uninterrupted run's, and no answer was paid for twice."""
    rng = random.Random(seed)
    q = n_questions(n_ids, samples)
    kill_after = rng.randint(1, q - 1)
    script = FaultScript(seed, fail_rate)
    api = start_api(script)
    with closing(api):
        _, argv = write_inputs(root, n_ids, samples, api.url)
        env = {**os.environ, "ANTHROPIC_API_KEY": CANARY, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "stages.judge", *argv]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        while script.delivered < kill_after and proc.poll() is None:
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
        log = proc.communicate()[0].decode(errors="replace")
        assert proc.returncode == -signal.SIGKILL, f"finished before the kill:\n{log[-2000:]}"
        delivered_before = script.delivered
        assert not (root / "out" / "comparisons.parquet").exists(), "output before the end"
        # Answers delivered but not yet written when the kill landed are the only ones re-asked.
        cached = len(cache_files(root))
        assert delivered_before - 1 <= cached <= delivered_before
        leftovers = [p for p in (root / "cache").rglob("*.tmp")]
        resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert CANARY not in resumed.stdout + resumed.stderr + log
        _check_outputs(root, n_ids, samples)
        assert len(cache_files(root)) == q
        repaid = script.delivered - q  # answers delivered twice: at most the one in flight
        assert 0 <= repaid <= delivered_before - cached
        reference = reference_comparisons(root / "reference", n_ids, samples)
        assert (root / "out" / "comparisons.parquet").read_bytes() == reference
        return {
            "questions": q,
            "killed_after_answers": delivered_before,
            "cached_at_kill": cached,
            "tmp_left_in_cache": len(leftovers),
            "repaid": repaid,
            "faults": script.faults,
            "lost": 0,
        }


def reference_comparisons(root: Path, n_ids: int = 6, samples: int = 2) -> bytes:
    """The comparisons table of an uninterrupted, fault-free in-process run."""
    import stages.judge

    root.mkdir(parents=True, exist_ok=True)
    api = start_api(FaultScript(0, 0.0))
    with anthropic_key(), closing(api):
        _, argv = write_inputs(root, n_ids, samples, api.url)
        stages.judge.main(argv)
        return (root / "out" / "comparisons.parquet").read_bytes()
