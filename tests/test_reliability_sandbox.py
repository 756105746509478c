"""Hostile code samples harm nothing outside the sandbox; secrets of the parent stay invisible.

Complements tests/test_sandbox.py (loops, fork bombs, huge allocations, writes/deletes outside the
temp dir) with: a canary environment variable of the parent, by every route a sample has to it
(os.environ, /proc/self/environ, the parent's and every other /proc/<pid>/environ), and sockets
(a listener on 127.0.0.1 must see no connection). The whole hostile set also runs through
`run_many`, the path the score stage uses, beside a good sample that must still pass.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

from lib.sandbox import SandboxLimits, run_many, run_program

FAST = SandboxLimits(timeout_s=2.0, memory_mb=512)
CANARY_ENV = "POLYCHROMIC_RELIABILITY_CANARY"


@pytest.fixture
def canary(monkeypatch):
    value = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv(CANARY_ENV, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", value)
    return value


def _find_canary(value: str) -> str:
    """A sample that looks for `value` everywhere it can and fails if it finds it."""
    return f"""
import os
hits = []
if any({value!r} in v for v in os.environ.values()):
    hits.append("os.environ")
for pid in ["self"] + sorted(p for p in os.listdir("/proc") if p.isdigit()):
    try:
        with open(f"/proc/{{pid}}/environ", "rb") as fh:
            if {value.encode()!r} in fh.read():
                hits.append(pid)
    except OSError:
        pass  # refused by the sandbox or the kernel: nothing seen
assert not hits, hits
"""


def test_canary_env_var_is_invisible_to_a_sample(canary):
    # A process started with the canary in its environment (as the score stage's pool workers
    # are, when the key is set): without the guard, its /proc/<pid>/environ gives the secret away.
    holder = subprocess.Popen(["sleep", "30"], env=dict(os.environ))
    try:
        # Until the child has exec'd, its environ reads empty: wait for it (bounded).
        deadline = time.monotonic() + 10
        environ = ""
        while canary not in environ and time.monotonic() < deadline:
            with open(f"/proc/{holder.pid}/environ") as fh:
                environ = fh.read()
            time.sleep(0.01)
        assert canary in environ  # it is there to be found
        for res in (
            run_program(_find_canary(canary), FAST),
            *run_many([_find_canary(canary)], FAST),
        ):
            assert res.passed, res.stderr_tail
            assert canary not in res.stderr_tail
    finally:
        holder.kill()
        holder.wait()


def test_reading_the_parents_environ_is_refused(canary):
    src = "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())\n"
    res = run_program(src, FAST)
    assert not res.passed
    assert "another process's /proc entry refused" in res.stderr_tail
    assert canary not in res.stderr_tail


def test_own_proc_entries_stay_readable():
    src = "open('/proc/self/status').read()\nopen('/proc/meminfo').read()\n"
    assert run_program(src, FAST).passed


class Listener:
    """A TCP listener on 127.0.0.1 that counts accepted connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


SOCKET_SAMPLES = {
    "socket.create_connection": "import socket\nsocket.create_connection(('127.0.0.1', {port}))\n",
    "_socket": "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n",
    "http.client": "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port})\nc.request('GET', '/')\n",
    "urllib": "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')\n",
    "udp": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))\n",
}


@pytest.mark.parametrize("name", sorted(SOCKET_SAMPLES))
def test_sockets_are_refused_and_nothing_connects(name):
    listener = Listener()
    try:
        res = run_program(SOCKET_SAMPLES[name].format(port=listener.port), FAST)
        time.sleep(0.2)
        assert not res.passed
        assert "refused" in res.stderr_tail, res.stderr_tail
        assert listener.accepted == 0
    finally:
        listener.close()
    # The control: the same connection from outside the sandbox is accepted.
    listener = Listener()
    try:
        socket.create_connection(("127.0.0.1", listener.port)).close()
        time.sleep(0.2)
        assert listener.accepted == 1
    finally:
        listener.close()


def hostile_samples(outside: str, marker: str, canary: str, port: int) -> dict[str, str]:
    """name -> program; every one must fail (or, for `env`, pass while finding nothing)."""
    return {
        "infinite_loop": "while True:\n    pass\n",
        "fork_bomb": f"# {marker}\nimport os\nwhile True:\n    os.fork()\n",
        "alloc_10gb": "x = bytearray(10 * 1024**3)\n",
        "write_outside": f"open({outside!r}, 'w').write('pwned')\n",
        "os_open_outside": f"import os\nos.open({outside!r}, os.O_CREAT | os.O_WRONLY)\n",
        "read_parent_env": "import os\nopen(f'/proc/{os.getppid()}/environ', 'rb').read()\n",
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\n",
        "subprocess": "import subprocess\nsubprocess.run(['touch', " + repr(outside) + "])\n",
        "env_scan": _find_canary(canary),
    }


def run_hostile_batch(tmp_path, canary: str) -> dict[str, object]:
    """Run every hostile sample plus a good one through run_many; check nothing escaped.

    Returns the counts the reliability report records.
    """
    outside = str(tmp_path / "escaped.txt")
    marker = f"forkbomb-{uuid.uuid4().hex}"
    listener = Listener()
    try:
        samples = hostile_samples(outside, marker, canary, listener.port)
        names = [*samples, "good"]
        programs = [*samples.values(), "assert sum([2, 3]) == 5\n"]
        t0 = time.monotonic()
        results = dict(zip(names, run_many(programs, FAST, workers=2), strict=True))
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
        accepted = listener.accepted
    finally:
        listener.close()
    survivors = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", errors="replace") as fh:
                    if marker in fh.read():
                        survivors.append(pid)
            except OSError:
                pass
    return {
        "results": results,
        "escaped_file": os.path.exists(outside),
        "connections": accepted,
        "survivors": survivors,
        "elapsed_s": elapsed,
        "canary_in_output": any(canary in r.stderr_tail for r in results.values()),
    }


def test_hostile_batch_through_run_many_harms_nothing(tmp_path, canary):
    out = run_hostile_batch(tmp_path, canary)
    res = out["results"]
    assert res["good"].passed and res["env_scan"].passed, res["env_scan"].stderr_tail
    bad = {k: r.status for k, r in res.items() if k not in ("good", "env_scan")}
    assert bad == {k: ("timeout" if k == "infinite_loop" else "failed") for k in bad}
    assert not out["escaped_file"] and out["connections"] == 0 and out["survivors"] == []
    assert not out["canary_in_output"]
