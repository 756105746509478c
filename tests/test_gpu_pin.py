"""scripts/gpu_pin.py: concurrent commands get distinct GPUs; a killed holder frees its GPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Prints the GPU it was given, then holds it until its stdin closes (or it is killed).
HOLD = "import os, sys; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); sys.stdin.read()"


def _pin(tmp: Path, *cmd: str, wait: str = "inf", slots: int | str = 1) -> subprocess.Popen:
    env = {
        **os.environ,
        "GPU_PIN_DEVICES": "3,5",
        "GPU_PIN_LOCK_DIR": str(tmp / "locks"),
        "GPU_PIN_WAIT": wait,
        "GPU_PIN_SLOTS": str(slots),
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/gpu_pin.py"), *cmd],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_holders_get_distinct_gpus_and_a_killed_holder_frees_its_gpu(tmp_path):
    a = _pin(tmp_path, sys.executable, "-c", HOLD)
    b = _pin(tmp_path, sys.executable, "-c", HOLD)
    try:
        gpu_a, gpu_b = a.stdout.readline().strip(), b.stdout.readline().strip()
        assert {gpu_a, gpu_b} == {"3", "5"}  # both held at once: one GPU each
        full = _pin(tmp_path, sys.executable, "-c", HOLD, wait="0")
        _, err = full.communicate(timeout=60)
        assert full.returncode == 75 and "taken" in err  # nothing free, no wait: it says so
        c = _pin(tmp_path, sys.executable, "-c", HOLD)  # waits for a GPU
        time.sleep(1.0)
        assert c.poll() is None, "a third holder must wait while both GPUs are held"
        os.kill(a.pid, signal.SIGKILL)  # the holder dies without any cleanup of its own
        a.wait(timeout=30)
        assert c.stdout.readline().strip() == gpu_a  # the killed holder's GPU, not b's
        c.stdin.close()
        assert c.wait(timeout=30) == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_slots_spread_over_the_gpus_first_then_double_up_then_refuse(tmp_path):
    # 2 GPUs x 2 slots: holders 1-2 take one GPU each (spread before doubling), 3-4 their
    # second slots, a 5th finds all four slots held.
    held, gpus = [], []
    try:
        for _ in range(4):  # one at a time: each holds its lock before the next one looks
            held.append(_pin(tmp_path, sys.executable, "-c", HOLD, slots=2))
            gpus.append(held[-1].stdout.readline().strip())
        assert sorted(gpus[:2]) == ["3", "5"] and sorted(gpus[2:]) == ["3", "5"]
        full = _pin(tmp_path, sys.executable, "-c", HOLD, wait="0", slots=2)
        _, err = full.communicate(timeout=60)
        assert full.returncode == 75 and "taken" in err
    finally:
        for p in held:
            p.kill()
            p.wait()


def test_slots_below_one_are_refused(tmp_path):
    run = _pin(tmp_path, "true", slots=0)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and "GPU_PIN_SLOTS must be >= 1" in err


def test_non_numeric_slots_fail_in_one_line_naming_the_variable(tmp_path):
    run = _pin(tmp_path, "true", slots="two")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and "GPU_PIN_SLOTS must be an integer >= 1" in err
    assert "'two'" in err and "Traceback" not in err


def test_without_any_gpu_it_fails_with_a_message(tmp_path):
    env = {**os.environ, "GPU_PIN_DEVICES": "", "CUDA_VISIBLE_DEVICES": "", "PATH": "/nonexistent"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gpu_pin.py"), "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "no GPU found" in run.stderr
