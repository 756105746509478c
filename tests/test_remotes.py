"""Real DVC remotes on loopback: an OpenSSH server and an S3 server (moto), started by the tests.

For each remote, in a small DVC repo (one stage with a param, a 240-file folder out so that a push
takes long enough to interrupt): `dvc push`, then `dvc pull` in a fresh `git clone` gives
byte-identical outputs; `dvc exp push` / `dvc exp pull` carry an experiment (git refs through a bare
git remote, outputs through the DVC remote); a push killed halfway completes when rerun. The
project's own pipeline round-trips through the default (local) remote in tests/test_pipeline.py.

Needs `openssh-server` (sshd; .ci/run and scripts/setup.sh install it on Debian) and the pins
`dvc-ssh`, `dvc-s3`, `moto[server]` from requirements.lock.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pipeline_util import VENV_BIN

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
N_FILES = 240

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Env:
    """Runs git / dvc with a throwaway HOME (no known_hosts, no user config) and given extras."""

    def __init__(self, home: Path, extra: dict[str, str]):
        self.vars = dict(os.environ)
        self.vars.update(
            HOME=str(home),
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            GIT_AUTHOR_NAME="t",
            GIT_AUTHOR_EMAIL="t@t",
            GIT_COMMITTER_NAME="t",
            GIT_COMMITTER_EMAIL="t@t",
            DVC_NO_ANALYTICS="1",
            **extra,
        )

    def run(self, cmd: list[str], cwd: Path, timeout: int = 300) -> str:
        r = subprocess.run(
            cmd, cwd=cwd, env=self.vars, capture_output=True, text=True, timeout=timeout
        )
        if r.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        return r.stdout + r.stderr

    def dvc(self, args: list[str], cwd: Path) -> str:
        return self.run([str(VENV_BIN / "dvc"), *args], cwd)


@pytest.fixture(scope="module")
def ssh_remote(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path, Path]]:
    """(url, extra env, folder the remote writes to, client key) of an sshd on 127.0.0.1."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd not found: apt-get install -y openssh-server (scripts/setup.sh does)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    shutil.copy(d / "client.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    port = _free_port()
    user = os.environ.get("USER") or __import__("getpass").getuser()
    (d / "sshd_config").write_text(
        textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        Port {port}
        HostKey {d / "host"}
        PidFile {d / "sshd.pid"}
        AuthorizedKeysFile {d / "authorized_keys"}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        Subsystem sftp internal-sftp
        """)
    )
    log = d / "sshd.log"  # a file, not a pipe: an undrained pipe would block the server
    with log.open("w") as f:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=f, stderr=subprocess.STDOUT
        )
    try:
        _wait_port(port, proc, log)
        store = d / "store"
        store.mkdir()
        yield f"ssh://{user}@127.0.0.1:{port}{store}", {}, store, d / "client"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def s3_remote(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Callable[[], int], None]]:
    """(url, extra env, object counter, None) of moto's S3 server on 127.0.0.1."""
    import boto3

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"  # moto logs every request: not a pipe
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        _wait_port(port, proc, log, timeout=60)
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_creds(creds))
        s3.create_bucket(Bucket="polychromic")

        def count() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket="polychromic")
            return sum(len(p.get("Contents", [])) for p in pages)

        yield "s3://polychromic/store", creds | {"ENDPOINT": endpoint}, count, None
    finally:
        _stop(proc)


def _boto_creds(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
        "region_name": creds["AWS_DEFAULT_REGION"],
    }


MAKE = """\
import hashlib, pathlib, yaml
n = yaml.safe_load(open("params.yaml"))["n"]
out = pathlib.Path("out"); (out / "blob").mkdir(parents=True, exist_ok=True)
(out / "data.bin").write_bytes(hashlib.sha256(str(n).encode()).digest() * (4096 * n))
for i in range(N_FILES):
    (out / "blob" / f"{i:03d}.bin").write_bytes(hashlib.sha256(f"{n}:{i}".encode()).digest() * 512)
""".replace("N_FILES", str(N_FILES))


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _configure(env: Env, repo: Path, name: str, url: str, extra: dict, key: Path | None) -> None:
    env.dvc(["remote", "add", "-f", "-d", name, url], repo)
    if "ENDPOINT" in extra:
        env.dvc(["remote", "modify", name, "endpointurl", extra["ENDPOINT"]], repo)
    if key is not None:  # a per-machine setting: .dvc/config.local, not committed
        env.dvc(["remote", "modify", "--local", name, "keyfile", str(key)], repo)


def _roundtrip(tmp_path: Path, name: str, url: str, extra: dict, key: Path | None, count):
    env = Env(tmp_path / "home", {k: v for k, v in extra.items() if k != "ENDPOINT"})
    (tmp_path / "home").mkdir()
    origin, repo = tmp_path / "origin.git", tmp_path / "repo"
    env.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    repo.mkdir()
    env.run(["git", "init", "-q", "-b", "main"], repo)
    env.dvc(["init", "-q"], repo)
    (repo / "make.py").write_text(MAKE)
    (repo / "params.yaml").write_text("n: 1\n")
    env.dvc(["stage", "add", "-q", "-n", "make", "-p", "n", "-d", "make.py", "-o", "out",
             f"{sys.executable} make.py"], repo)  # fmt: skip
    _configure(env, repo, name, url, extra, key)
    env.dvc(["repro", "-q"], repo)
    env.run(["git", "add", "-A"], repo)
    env.run(["git", "commit", "-qm", "v1"], repo)
    env.run(["git", "remote", "add", "origin", str(origin)], repo)
    env.run(["git", "push", "-q", "origin", "HEAD:main"], repo)

    # 1. An interrupted push: SIGKILL once some of the objects are on the remote, then rerun.
    total = N_FILES + 2  # the blob files, data.bin, the folder's manifest
    proc = subprocess.Popen(
        [str(VENV_BIN / "dvc"), "push", "-j", "1"],
        cwd=repo,
        env=env.vars,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while count() < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = count()
    assert proc.returncode == -signal.SIGKILL and 0 < at_kill < total, (
        f"the push was not interrupted halfway ({at_kill} of {total} objects, rc {proc.returncode})"
    )
    env.dvc(["push"], repo)
    assert count() == total

    # 2. A fresh clone pulls byte-identical outputs.
    clone = tmp_path / "clone"
    env.run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    if key is not None:
        env.dvc(["remote", "modify", "--local", name, "keyfile", str(key)], clone)
    env.dvc(["pull"], clone)
    assert _digest(clone / "out") == _digest(repo / "out")
    assert len(_digest(clone / "out")) == N_FILES + 1

    # 3. An experiment travels with `dvc exp push` / `dvc exp pull`.
    env.dvc(["exp", "run", "-q", "-n", "n3", "-S", "n=3"], repo)
    exp_out = _digest(repo / "out")
    assert exp_out != _digest(clone / "out")
    env.dvc(["exp", "push", "origin", "n3"], repo)
    env.dvc(["exp", "pull", "origin", "n3"], clone)
    # The clone's cache holds only n=1's objects: apply can check n=3's out only if exp pull
    # fetched it from the DVC remote.
    env.dvc(["exp", "apply", "n3"], clone)
    assert _digest(clone / "out") == exp_out
    assert (clone / "params.yaml").read_text().strip() == "n: 3"


def test_ssh_remote_roundtrip_interrupted_push_and_experiments(ssh_remote, tmp_path):
    url, extra, store, key = ssh_remote

    def count() -> int:
        return sum(1 for p in store.rglob("*") if p.is_file() and not p.name.startswith("."))

    _roundtrip(tmp_path, "ssh", url, extra, key, count)


def test_s3_remote_roundtrip_interrupted_push_and_experiments(s3_remote, tmp_path):
    url, extra, count, _ = s3_remote
    _roundtrip(tmp_path, "s3", url, extra, None, count)
