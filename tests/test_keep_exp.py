"""scripts/keep_exp.py keeps a run's record in git: the lock, params, metrics and the samples from
the DVC cache, checked against the lock, and never a lock that is not one consistent run.

A two-stage DVC repo made here: `make` writes data/a.txt, `count` reads it and writes
metrics/n.json (git-tracked) and data/b.txt (cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
pytestmark = pytest.mark.skipif(not Path(DVC).exists(), reason="dvc is not installed")
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t", "PATH": f"{Path(DVC).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip


def _run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        assert _run(r, *cmd).returncode == 0
    (r / "params.yaml").write_text("n: 3\n")
    (r / "make.py").write_text("open('data/a.txt', 'w').write('x\\n' * 3)\n")
    (r / "count.py").write_text(
        "import json\n"
        "t = open('data/a.txt').read()\n"
        "open('data/b.txt', 'w').write(t.upper())\n"
        "json.dump({'lines': t.count(chr(10))}, open('metrics/n.json', 'w'))\n"
    )
    (r / "dvc.yaml").write_text(
        "stages:\n"
        "  make:\n"
        "    cmd: python make.py\n"
        "    params: [n]\n"
        "    outs: [data/a.txt]\n"
        "  count:\n"
        "    cmd: python count.py\n"
        "    deps: [count.py, data/a.txt]\n"
        "    outs: [data/b.txt]\n"
        "    metrics: [metrics/n.json: {cache: false}]\n"
    )
    (r / "data").mkdir()
    (r / "metrics").mkdir()
    p = _run(r, DVC, "repro", "-q")
    assert p.returncode == 0, p.stderr
    (r / "metrics" / "stage_times.tsv").write_text("stage\tseconds\nmake\t1.0\n")  # no stage's
    assert _run(r, "git", "add", "-A").returncode == 0
    assert _run(r, "git", "commit", "-qm", "run").returncode == 0
    return r


def _keep(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(repo, sys.executable, str(ROOT / "scripts" / "keep_exp.py"), *args)


def test_keeps_lock_params_metrics_and_checked_outputs(repo):
    p = _keep(repo, "HEAD", "kept/run", "--outs", "data/b")
    assert p.returncode == 0, p.stderr
    kept = repo / "kept" / "run"
    assert (kept / "dvc.lock").read_text() == (repo / "dvc.lock").read_text()
    assert yaml.safe_load((kept / "params.yaml").read_text()) == {"n": 3}
    assert json.loads((kept / "metrics" / "n.json").read_text()) == {"lines": 3}
    assert (kept / "data" / "b.txt").read_text() == "X\nX\nX\n"
    assert not (kept / "data" / "a.txt").exists()  # not under --outs
    assert not (kept / "metrics" / "stage_times.tsv").exists()  # tracked, but no stage made it


def test_refuses_a_corrupt_cache_object_and_leaves_nothing(repo):
    md5 = hashlib.md5(b"X\nX\nX\n").hexdigest()
    obj = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    os.chmod(obj, 0o644)
    obj.write_text("tampered\n")
    p = _keep(repo, "HEAD", "kept/run", "--outs", "data/b")
    assert p.returncode != 0
    assert f"does not match its md5 {md5}" in p.stderr
    assert not (repo / "kept" / "run").exists()
    assert [f.name for f in (repo / "kept").iterdir()] == []  # no half-written folder


def test_refuses_a_lock_that_is_not_one_run(repo):
    # The base's lock for `count` with a new `make` output: what `dvc exp save` of one stage keeps.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"]["make"]["outs"][0]["md5"] = "0" * 32
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert _run(repo, "git", "commit", "-qam", "stale").returncode == 0
    p = _keep(repo, "HEAD", "kept/run")
    assert p.returncode != 0
    assert "is not one run: stale deps {'count': ['data/a.txt']}" in p.stderr


def test_upto_checks_and_keeps_only_that_stage_and_what_it_reads(repo):
    # A sweep experiment ran `make` only; `count` in its lock is the base's (stale). --upto make
    # keeps make's record and leaves count's metrics out; --upto count reaches make through
    # count's dep on data/a.txt, so the stale count refuses.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"]["make"]["outs"][0]["md5"] = hashlib.md5(b"x\nx\nx\n").hexdigest()
    lock["stages"]["count"]["deps"][1]["md5"] = "0" * 32  # read another data/a.txt
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert _run(repo, "git", "commit", "-qam", "make only").returncode == 0
    p = _keep(repo, "HEAD", "kept/run", "--upto", "make", "--outs", "data/")
    assert p.returncode == 0, p.stderr
    kept = repo / "kept" / "run"
    assert (kept / "data" / "a.txt").read_text() == "x\nx\nx\n"
    assert not (kept / "data" / "b.txt").exists()  # count's output: not this run's
    assert not (kept / "metrics" / "n.json").exists()
    p = _keep(repo, "HEAD", "kept/run2", "--upto", "count")
    assert p.returncode != 0
    assert "is not one run: stale deps {'count': ['data/a.txt']}" in p.stderr
    p = _keep(repo, "HEAD", "kept/run3", "--upto", "nope")
    assert "--upto nope: no such stage" in p.stderr


def test_upto_reaches_the_stages_a_stage_reads(repo):
    p = _keep(repo, "HEAD", "kept/run", "--upto", "count", "--outs", "data/")
    assert p.returncode == 0, p.stderr
    kept = repo / "kept" / "run"
    assert (kept / "data" / "a.txt").read_text() == "x\nx\nx\n"  # make's, read by count
    assert (kept / "data" / "b.txt").read_text() == "X\nX\nX\n"
