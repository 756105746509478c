"""The GPU lease's round trip, run here on CPU: scripts/gpu_lease.sh starts one DVC experiment per
training seed in the background and collects bundles and caches; scripts/gpu_import.sh takes them
into another clone, where `dvc exp` must list them and the cache must hold their outputs.

The same scripts ran issue 18's social test runs on the H200 (2026-12-01); here the target is the
smoke profile's `split` stage (seconds), so the wiring is what is tested, not the GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists(),
    reason="dvc is not installed",
)


def _env(tmp: Path) -> dict[str, str]:
    site = tmp / "site"
    site.mkdir()
    (site / ".wheels").touch()  # the wheelhouse is "installed": this venv has every package
    home = tmp / "home"
    home.mkdir()
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),  # the lease may write a git identity: never into the real one
        "LEASE_ROOT": str(tmp / "lease"),
        "SITE": str(site),
        "OUT": str(tmp / "out"),
        "POLYCHROMIC_CACHE": str(tmp / "cache"),
        "LIMIT": "240",
    }


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{cmd}: rc {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def _runs(out: Path, dest: Path) -> Path:
    """`collect`'s runs.tar.NN parts in `out`, joined in order and unpacked into `dest`."""
    dest.mkdir()
    subprocess.run(f"cat runs.tar.[0-9][0-9] | tar -xf - -C {dest}", shell=True, cwd=out,
                   check=True)  # fmt: skip
    return dest


def _yaml_at(repo: Path, ref: str, path: str) -> dict:
    """The YAML file `path` as committed at `ref` (an experiment's params.yaml, dvc.lock)."""
    return yaml.safe_load(
        subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )


def test_seeds_collect_import_round_trip(tmp_path):
    env = _env(tmp_path)
    # The lease reads this checkout (its working tree, as the device machine's copy) and writes
    # only under LEASE_ROOT, OUT and HOME.
    src = ROOT
    _sh(["bash", "scripts/gpu_lease.sh", "seeds", "configs/smoke.yaml", "0 1", "--", "split"],
        src, env)  # fmt: skip
    # The runs committed with a lease identity set in their own repositories, not in HOME.
    assert not (tmp_path / "home" / ".gitconfig").exists()
    # Parts of 64 KB: the archive of both runs comes back in several, which the import joins.
    out = _sh(["bash", "scripts/gpu_lease.sh", "collect"], src, {**env, "COLLECT_PART_KB": "64"})
    assert "t0: exit 0" in out and "t1: exit 0" in out, out
    # `keep` keeps each finished run from its own clone, under its experiment's name, as
    # scripts/keep_exp.py does here: a lease can select and go on without a trip through here.
    kept = tmp_path / "kept"
    _sh(["bash", "scripts/gpu_lease.sh", "keep", str(kept), "--upto", "split"], src, env)
    assert sorted(p.name for p in kept.iterdir()) == ["gpu-s0", "gpu-s1"]
    for k in (0, 1):
        par = yaml.safe_load((kept / f"gpu-s{k}" / "params.yaml").read_text())
        assert par["train"]["seed"] == k  # each folder is its own run's, not the first one's
        assert "split" in yaml.safe_load((kept / f"gpu-s{k}" / "dvc.lock").read_text())["stages"]
    # prepare and split ran once, in the base; each run restored them from the shared cache
    for k in (0, 1):
        log = (tmp_path / "lease" / f"t{k}.log").read_text()
        assert "Running stage 'prepare'" not in log and "Running stage 'split'" not in log, log
    # A call brings back at most 8 files: the runs travel as one archive in parts.
    got = sorted(p.name for p in (tmp_path / "out").iterdir())
    parts = [n for n in got if n.startswith("runs.tar.")]
    assert got == ["logs.gz", *parts] and len(parts) >= 2, got
    assert parts == [f"runs.tar.{i:02d}" for i in range(len(parts))]
    runs = _runs(tmp_path / "out", tmp_path / "runs")
    assert sorted(p.name for p in runs.iterdir()) == [
        "cache_t0.tgz", "cache_t1.tgz", "t0.bundle", "t1.bundle"
    ]  # fmt: skip
    # Each bundle leaves out the history the importing side has (the lease's starting commit):
    # it requires that commit and holds only the base and the experiment.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    for k in (0, 1):
        v = subprocess.run(["git", "bundle", "verify", str(runs / f"t{k}.bundle")], cwd=ROOT,
                           capture_output=True, text=True, check=True)  # fmt: skip
        assert head in v.stdout + v.stderr, v.stdout + v.stderr
        assert (runs / f"t{k}.bundle").stat().st_size < 1_000_000

    # A run the lease cut short leaves a bundle with the base and no experiment: skipped, named.
    subprocess.run(["git", "bundle", "create", "-q", str(tmp_path / "out" / "t9.bundle"), "HEAD"],
                   cwd=tmp_path / "lease" / "base", check=True)  # fmt: skip
    dst = tmp_path / "dst"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True)
    listed = _sh(["bash", str(ROOT / "scripts" / "gpu_import.sh"), str(tmp_path / "out")], dst, env)
    assert "gpu-s0" in listed and "gpu-s1" in listed, listed
    assert "t9.bundle: no experiment in it (the run did not finish); skipped" in listed, listed
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=dst, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    by_name = {r.rsplit("/", 1)[1]: r for r in refs}
    assert set(by_name) == {"gpu-s0", "gpu-s1"}
    cache = dst / ".dvc" / "cache" / "files" / "md5"
    for seed in (0, 1):
        ref = by_name[f"gpu-s{seed}"]
        params = _yaml_at(dst, ref, "params.yaml")
        assert params["train"]["seed"] == seed  # -S train.seed=<k> reached the experiment
        assert (
            params["split"]["max_train"]
            == yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())["split"]["max_train"]
        )  # the profile is in the base commit
        split = _yaml_at(dst, ref, "dvc.lock")["stages"]["split"]["outs"]
        md5 = next(o["md5"] for o in split if o["path"] == "data/split")
        manifest = cache / md5[:2] / md5[2:]  # a directory output: its .dir listing
        assert manifest.exists(), f"seed {seed}: {manifest} not imported"
        for entry in yaml.safe_load(manifest.read_text()):  # JSON is YAML
            assert (cache / entry["md5"][:2] / entry["md5"][2:]).exists(), entry


def test_curves_prepares_the_split_as_dvc_yaml_does_and_collects_both_runs(tmp_path):
    # `curves` runs prepare and split with dvc.yaml's own commands (a stale copy of them would
    # split differently from the pipeline the curves choose steps for), then trains polychromic and
    # its λ 0 twin in the background; `collect` archives their DVCLive curves.
    import tarfile

    import pandas as pd

    # A TAG names the run (curves-<TAG>), so two domains' curves can share one lease.
    env = _env(tmp_path)
    _sh(["bash", "scripts/gpu_lease.sh", "curves", "configs/smoke.yaml", "2", "qa"], ROOT, env)
    out = _sh(["bash", "scripts/gpu_lease.sh", "collect"], ROOT, env)
    assert "curves-qa: exit 0" in out, out
    with tarfile.open(tmp_path / "out" / "curves-qa.tgz") as tar:
        rows = pd.read_csv(tar.extractfile("out/curves.tsv"), sep="\t")
    assert set(rows["run"]) == {"polychromic", "lambda0"}
    assert rows["step"].max() == 2  # STEPS reached the runs
    assert "val/ce" in set(rows["metric"])
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())["split"]
    train = pd.read_parquet(
        tmp_path / "lease" / "curves-qa" / "repo" / "data" / "split" / "train.parquet"
    )
    assert len(train) == smoke["max_train"]  # the profile was applied before the split ran


def _spans(tmp: Path, jobs: str) -> list[tuple[float, float]]:
    """Three queued runs of ~1 s each, drained with JOBS=jobs: each run's (start, end) times."""
    tmp.mkdir()
    env = {**_env(tmp), "JOBS": jobs, "POLL": "0.1"}
    run = 'date +%s.%N >"$0.t0"; sleep 1; date +%s.%N >"$0.t1"'
    for k in range(3):
        _sh(["bash", "scripts/gpu_lease.sh", "queue", f"r{k}", str(ROOT), "bash", "-c", run,
             str(tmp / f"r{k}")], ROOT, env)  # fmt: skip
    _sh(["bash", "scripts/gpu_lease.sh", "drain"], ROOT, env)  # returns once all have ended
    return [
        (float((tmp / f"r{k}.t0").read_text()), float((tmp / f"r{k}.t1").read_text()))
        for k in range(3)
    ]


def test_drain_runs_at_most_jobs_at_a_time_in_queue_order(tmp_path):
    # Five 0.5B-coder runs at once ran out of the H200's memory at step 1 (56 GiB each); JOBS
    # bounds how many share the GPU. JOBS=1: each run starts after the one before it ended.
    one = _spans(tmp_path / "one", "1")
    assert all(one[k + 1][0] >= one[k][1] for k in range(2)), one
    # JOBS=0 (the default): all at once, so the three overlap (the guard for the check above).
    every = _spans(tmp_path / "all", "0")
    assert max(s for s, _ in every) < min(e for _, e in every), every


def test_stop_ends_exactly_the_named_run_and_collect_leaves_its_clone_out(tmp_path):
    # Round 3 on the H200 stopped two of five runs with a glob over their folders, and the glob
    # `tval-mult-l3*` also took down tval-mult-l30. `stop NAME` ends NAME's session, no other.
    env = {**_env(tmp_path), "POLL": "0.1"}
    lease = tmp_path / "lease"
    for name in ("tx", "tx0"):
        _sh(["bash", "scripts/gpu_lease.sh", "queue", name, str(ROOT), "sleep", "60"], ROOT, env)
    drain = subprocess.Popen(["bash", "scripts/gpu_lease.sh", "drain"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        pids = {}
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            pids = {n: int((lease / f"{n}.pid").read_text()) for n in ("tx", "tx0")
                    if (lease / f"{n}.pid").exists()}  # fmt: skip
            time.sleep(0.1)
        assert len(pids) == 2, "the two runs did not start"
        (lease / "tx").mkdir()  # its clone, as run_clone makes it
        _sh(["bash", "scripts/gpu_lease.sh", "stop", "tx"], ROOT, env)
        assert (lease / "tx.rc").read_text().strip() == "137"
        assert not (lease / "tx").exists() and (lease / "stopped-tx").is_dir()
        time.sleep(0.3)
        assert not _alive(pids["tx"])
        assert _alive(pids["tx0"]) and not (lease / "tx0.rc").exists()  # the prefix is untouched
        _sh(["bash", "scripts/gpu_lease.sh", "stop", "tx0"], ROOT, env)
        assert drain.wait(timeout=30) == 0  # nothing left running
    finally:
        for pid in pids.values():  # the sessions that started, should an assertion fail
            subprocess.run(["pkill", "-KILL", "-s", str(pid)])
        drain.kill()
    with pytest.raises(AssertionError, match="stop: no run ty in"):
        _sh(["bash", "scripts/gpu_lease.sh", "stop", "ty"], ROOT, env)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child stays a zombie until its parent reaps it: not alive
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


FAKE_DMON = """#!/bin/bash
[[ $1 == dmon ]] || exit 1
echo "# gpu     sm    mem    enc    dec"
echo "# Idx      %      %      %      %"
i=0
while true; do echo "    0     $((40 + i % 3))      1      0      0"; i=$((i + 1)); sleep 0.05; done
"""


def test_drain_records_gpu_utilisation_and_collect_summarises_it(tmp_path):
    # Round 3 had one nvidia-smi reading per call to go on (5 % busy with five runs, 83 % with
    # three): drain now runs `nvidia-smi dmon` beside the runs, ends it with them, and collect
    # prints the mean and median `sm` and keeps the readings in logs.gz.
    import gzip

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_DMON)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = _env(tmp_path)
    env.update({"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "POLL": "0.1", "DMON_S": "1"})
    lease = tmp_path / "lease"
    _sh(["bash", "scripts/gpu_lease.sh", "queue", "r0", str(ROOT), "sleep", "1"], ROOT, env)
    drain = subprocess.Popen(["bash", "scripts/gpu_lease.sh", "drain"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 10
    while not (lease / "dmon.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    dmon = int((lease / "dmon.pid").read_text())
    assert drain.wait(timeout=30) == 0
    time.sleep(0.2)
    assert not _alive(dmon) and not (lease / "dmon.pid").exists()  # ended with the runs
    out = _sh(["bash", "scripts/gpu_lease.sh", "collect"], ROOT, {**env, "LIMIT": "5"})
    line = [ln for ln in out.splitlines() if ln.startswith("GPU utilisation")]
    assert len(line) == 1 and "mean 41 %, median 41 %" in line[0], out  # 40, 41, 42, ... cycled
    n = int(line[0].split(" over ")[1].split()[0])
    assert n >= 10  # ~1 s at 0.05 s a reading
    logs = gzip.decompress((tmp_path / "out" / "logs.gz").read_bytes()).decode()
    assert "# gpu     sm" in logs


def test_sweep_grid_runs_lambda_zero_once():
    env = {**os.environ, "PRINT": "1", "LAMBDAS": "0 3", "OBJECTIVES": "additive passk"}
    out = subprocess.run(
        ["bash", "scripts/sweep.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    arg = "-S eval_split=val -S loss.lambda={} -S loss.objective={}"
    assert out == [  # λ 0 trains alike under every objective: once, under the first
        "val-addi-l0 " + arg.format(0, "additive"),
        "val-addi-l3 " + arg.format(3, "additive"),
        "val-pass-l3 " + arg.format(3, "passk"),
    ]


def test_sweep_names_keep_only_those_grid_lines():
    # A round that fits one lease: NAMES picks lines of the grid by name, in the grid's order;
    # the λ-0 line keeps its "once" rule, and a name not in the grid selects nothing.
    env = {**os.environ, "PRINT": "1", "NAMES": "val-pass-l3 val-addi-l0 val-mult-l0"}
    out = subprocess.run(
        ["bash", "scripts/sweep.sh"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [line.split()[0] for line in out] == ["val-addi-l0", "val-pass-l3"]


@pytest.mark.slow  # ~25-40 s: the seeds round trip above covers the base, clones and collect in CI
def test_sweep_starts_every_grid_line_as_its_experiment(tmp_path):
    # `sweep` reads scripts/sweep.sh's own grid (PRINT=1), so the lease runs exactly the grid the
    # RESULTS.md rule names; each line becomes experiment <name> with its -S arguments.
    env = {**_env(tmp_path), "LAMBDAS": "1", "OBJECTIVES": "additive multiplicative"}
    _sh(["bash", "scripts/gpu_lease.sh", "sweep", "configs/smoke.yaml", "--", "split"], ROOT, env)
    out = _sh(["bash", "scripts/gpu_lease.sh", "collect"], ROOT, env)
    names = ["val-addi-l1", "val-mult-l1"]
    for name in names:
        assert f"t{name}: exit 0" in out, out
    runs = _runs(tmp_path / "out", tmp_path / "runs")
    assert sorted(p.name for p in runs.glob("*.bundle")) == [f"t{n}.bundle" for n in names]
    for name in names:
        repo = tmp_path / "lease" / f"t{name}"
        ref = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        ref = next(r for r in ref if r.endswith("/" + name))
        params = _yaml_at(repo, ref, "params.yaml")
        lam, obj = name.split("-l")[1], {"addi": "additive", "mult": "multiplicative"}[name[4:8]]
        assert (params["eval_split"], params["loss"]["lambda"], params["loss"]["objective"]) == (
            "val",
            float(lam),
            obj,
        )


def test_collect_says_which_runs_go_on_and_exits_3(tmp_path):
    # 2026-12-02: a code seed 90 % through its pipeline was lost because the machine went back
    # 30 s after a watching call, before the collecting call came. `collect` is now the watching
    # call: past LIMIT with a run still going, it names the run and where it is, and exits 3.
    env = {**_env(tmp_path), "POLL": "0.1", "LIMIT": "1"}
    lease = tmp_path / "lease"
    prog = "printf 'train: 1/9\\rtrain: 7/9 s/step=2.3'; sleep 60"
    _sh(["bash", "scripts/gpu_lease.sh", "queue", "r0", str(ROOT), "bash", "-c", prog], ROOT, env)
    drain = subprocess.Popen(["bash", "scripts/gpu_lease.sh", "drain"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "7/9" not in _read(lease / "r0.log") and time.monotonic() < deadline:
            time.sleep(0.05)
        p = subprocess.run(["bash", "scripts/gpu_lease.sh", "collect"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert p.returncode == 3, p.stdout + p.stderr
        assert "r0: still running: train: 7/9 s/step=2.3" in p.stdout  # the last frame, not 1/9
        assert "still running: r0." in p.stderr and "call collect again at once" in p.stderr
        _sh(["bash", "scripts/gpu_lease.sh", "stop", "r0"], ROOT, env)
        assert drain.wait(timeout=30) == 0
        # Every run ended: collect exits 0 and says nothing is left.
        done = _sh(["bash", "scripts/gpu_lease.sh", "collect"], ROOT, env)
        assert "r0: exit 137" in done and "still running" not in done
    finally:
        if (lease / "r0.pid").exists():
            subprocess.run(["pkill", "-KILL", "-s", (lease / "r0.pid").read_text().strip()])
        drain.kill()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
