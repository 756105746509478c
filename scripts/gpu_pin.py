"""Run a command pinned to one free GPU: `python scripts/gpu_pin.py CMD ...` takes the first GPU whose
lock it can hold exclusively, sets CUDA_VISIBLE_DEVICES to it and execs CMD (the lock travels with
it: the exec'd process and its children hold it until the last one exits, however it exits, a kill
included, since the kernel drops an flock with its last open descriptor).

As params.yaml's `launcher`, it gives each experiment of a DVC queue its own GPU:

    dvc exp run --queue -S 'launcher=python scripts/gpu_pin.py python' -S loss.lambda=0.1
    dvc exp run --queue -S 'launcher=python scripts/gpu_pin.py python' -S loss.lambda=0.3
    dvc queue start -j 2        # two workers, each stage on a GPU no other worker holds

(or `python scripts/gpu_pin.py accelerate launch --num_processes 1`). Each training and generate
stage takes a free GPU when it starts; with more workers than GPUs the extra ones wait.

GPUs: GPU_PIN_DEVICES (e.g. `0,1`), else CUDA_VISIBLE_DEVICES, else one per `nvidia-smi -L` line.
GPU_PIN_SLOTS (default 1): holders per GPU. A 135M model's step is bound by kernel launches, so
two processes on one GPU nearly double its throughput (`GPU_PIN_SLOTS=2` with `dvc queue start
-j 4` on two GPUs); the GPUs' first slots fill before any second one.
Locks: GPU_PIN_LOCK_DIR (default /tmp/polychromic-gpu-locks, shared by every worker's temporary
workspace). GPU_PIN_WAIT: seconds to wait for a free GPU (default: forever; 0 fails at once).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path


def devices() -> list[str]:
    for var in ("GPU_PIN_DEVICES", "CUDA_VISIBLE_DEVICES"):
        ids = [d.strip() for d in os.environ.get(var, "").split(",") if d.strip()]
        if ids:
            return ids
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def acquire(ids: list[str], lock_dir: Path, slots: int = 1) -> tuple[str, int] | None:
    """(device id, descriptor holding its lock) for the first free slot, or None. Every GPU's
    first slot comes before any GPU's second, so work spreads before it doubles up."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        for dev in ids:
            name = f"gpu{dev}.lock" if slot == 0 else f"gpu{dev}.{slot}.lock"
            fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return dev, fd
    return None


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    ids = devices()
    if not ids:
        print("gpu_pin: no GPU found (set GPU_PIN_DEVICES)", file=sys.stderr)
        return 2
    lock_dir = Path(os.environ.get("GPU_PIN_LOCK_DIR", "/tmp/polychromic-gpu-locks"))
    try:
        wait = float(os.environ.get("GPU_PIN_WAIT", "inf"))
        slots = int(os.environ.get("GPU_PIN_SLOTS", "1"))
    except ValueError as e:  # one line naming the variable, not a traceback
        print(
            f"gpu_pin: GPU_PIN_SLOTS must be an integer >= 1 and GPU_PIN_WAIT a number ({e})",
            file=sys.stderr,
        )
        return 2
    if slots < 1:
        print(f"gpu_pin: GPU_PIN_SLOTS must be >= 1, got {slots}", file=sys.stderr)
        return 2
    t0, told = time.monotonic(), False
    while (got := acquire(ids, lock_dir, slots)) is None:
        if time.monotonic() - t0 >= wait:
            print(f"gpu_pin: every GPU of {ids} is taken ({lock_dir})", file=sys.stderr)
            return 75  # EX_TEMPFAIL
        if not told:
            print(f"gpu_pin: every GPU of {ids} is taken; waiting", file=sys.stderr, flush=True)
            told = True
        time.sleep(min(1.0, wait))
    dev, fd = got
    os.set_inheritable(fd, True)  # the exec'd command holds the lock from here on
    os.environ["CUDA_VISIBLE_DEVICES"] = dev
    # The time stamp lets a queue's logs show which stages shared the machine (bench/gpu_queue.sh).
    when = time.strftime("%H:%M:%S")
    print(f"gpu_pin: GPU {dev} at {when} -> {' '.join(argv)}", file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
