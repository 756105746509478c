"""SIGKILL a `dvc repro <stage>` at a random point, check what is left, resume, compare.

For one stage of a scratch repo (tests/pipeline_util.scratch_repo, smoke config) whose pipeline has
run once with params P0:
1. Reference: set one param of the stage to P1 and run `dvc repro --no-run-cache <stage>`
   uninterrupted; fingerprint its outputs (md5 per file) and time it.
2. Each kill: back to P0 (restored from DVC's run cache), then P1 again; start `dvc repro
   --no-run-cache <stage>` in its own process group and SIGKILL the whole group after a random
   delay in [0, reference time] (or, `after=<path>`, once that path appears).
   Then assert: every output is absent, the previous complete version (P0) or the complete new one
   (P1 reference): never partial; `dvc status <stage>` reports the stage changed unless every output
   is already the new version; the next `dvc repro --no-run-cache <stage>` succeeds and its outputs
   equal the reference, with no `*.tmp` inside any output.
`--no-run-cache` makes every resume a real recomputation, not a restore from DVC's run cache.

DVCLive curves (metrics/train/<system>/) are compared without their wall-clock columns
(`timestamp`, `step_time`), and metrics/judge.json without `usage` (HTTP calls / cache hits of that
run): everything else must match the uninterrupted run byte for byte.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.pipeline_util import VENV_BIN, env

# stage -> (params section, key, the P1 value): a change the stage declares, so it must rerun.
CHANGES: dict[str, tuple[str, str, object]] = {
    "prepare": ("data", "max_pairs", 2999),
    "split": ("split", "max_train", 15),
    "train_baseline": ("train", "lr", 0.0003),
    "train_gem": ("gem", "beta", 0.5),
    "train_polychromic": ("loss", "lambda", 0.5),
    "generate@zero_shot": ("generate", "temperature", 0.8),
    "generate@polychromic": ("generate", "top_p", 0.8),
    "score@zero_shot": ("score", "social_human_pass_rate", 0.6),
    "judge": ("judge", "samples_per_input", 2),
    "stats": ("stats", "bootstrap", 150),
    "plot": ("plot", "dpi", 100),
}

# Written in place while the stage runs (DVCLive): may be partial at a kill, must match after.
LIVE_PREFIX = "metrics/train/"


LOG_DIR = ".reliability-logs"  # every dvc run's stdout/stderr, for the secret scan
EXTRA_ENV: dict[str, str] = {}  # added to every run's environment (e.g. a canary API key)


def dvc_cmd(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [str(VENV_BIN / "dvc"), *args],
        cwd=root,
        env=env(EXTRA_ENV),
        capture_output=True,
        text=True,
    )
    (root / LOG_DIR).mkdir(exist_ok=True)
    with open(root / LOG_DIR / "dvc.log", "a", encoding="utf-8") as fh:
        fh.write(f"$ dvc {' '.join(args)}\n{out.stdout}{out.stderr}")
    if check and out.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out


def stage_outputs(root: Path, stage: str) -> list[str]:
    """outs + metrics + plots of `stage` as declared in dvc.yaml (foreach expanded)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    name, _, key = stage.partition("@")
    body = spec[name].get("do", spec[name])
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in body.get(kind, []):
            p = entry if isinstance(entry, str) else next(iter(entry))
            paths.append(p.replace("${item}", key).replace("${key}", key))
    return paths


def _normalise_live(rel: str, data: bytes) -> bytes:
    """Drop wall-clock values from DVCLive files; keep every row and every other value."""
    if rel.endswith(".tsv"):
        rows = list(csv.reader(io.StringIO(data.decode()), delimiter="\t"))
        if not rows:
            return data
        keep = [i for i, h in enumerate(rows[0]) if h not in ("timestamp", "step_time")]
        return "\n".join("\t".join(r[i] for i in keep) for r in rows).encode()
    if rel.endswith(".json"):
        obj = json.loads(data)
        obj.get("train", {}).pop("step_time", None)
        return json.dumps(obj, sort_keys=True).encode()
    return data


def fingerprint(root: Path, path: str) -> dict[str, str] | None:
    """{relative file: md5} under an output (one entry for a file), or None when absent."""
    p = root / path
    if not p.exists():
        return None
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    out = {}
    for f in files:
        rel = str(f.relative_to(root))
        data = f.read_bytes()
        if rel.startswith(LIVE_PREFIX):
            data = _normalise_live(rel, data)
        elif rel == "metrics/judge.json":
            # `usage` counts this run's HTTP calls and cache hits: a rerun served from the cache
            # reports 0 calls. Bookkeeping of the run, not a result, so it is left out.
            obj = json.loads(data)
            obj.pop("usage", None)
            data = json.dumps(obj, sort_keys=True).encode()
        out[rel] = hashlib.md5(data).hexdigest()
    return out


def set_param(root: Path, section: str, key: str, value: object) -> object:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    old = params[section][key]
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return old


def tmp_files(root: Path) -> list[str]:
    skip = (".dvc", ".git", ".venv", LOG_DIR)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.tmp")
        if p.relative_to(root).parts[0] not in skip
    )


@dataclass
class KillResult:
    stage: str
    seed: int
    delay_s: float
    landed: bool  # dvc was still running when the SIGKILL was sent (else it had just finished)
    states: dict[str, str]  # output -> absent | previous | new | unchanged | partial(live)
    status_changed: bool
    resumed_equal: bool
    resumed_from_checkpoint: bool
    stale_lock_warning: bool
    # dvc.lock after the kill: previous | new | mixed | cut (`_lock_after_kill`)
    lock_state: str = "previous"
    leftover_tmp: list[str] = field(default_factory=list)


@dataclass
class StageReference:
    stage: str
    outs: list[str]
    previous: dict[str, dict | None]
    new: dict[str, dict | None]
    seconds: float
    p0: object
    lock_previous: bytes  # dvc.lock at P0 and after the uninterrupted P1 run
    lock_new: bytes


def reference(root: Path, stage: str) -> StageReference:
    """Fingerprint P0 (current) and an uninterrupted P1 run; leave the repo at P0."""
    section, key, p1 = CHANGES[stage]
    outs = stage_outputs(root, stage)
    previous = {o: fingerprint(root, o) for o in outs}
    assert all(v is not None for v in previous.values()), f"{stage}: run the pipeline first"
    p0 = set_param(root, section, key, p1)
    assert p0 != p1, f"{stage}: {section}.{key} is already {p1!r}"
    lock_previous = (root / "dvc.lock").read_bytes()
    t0 = time.monotonic()
    dvc_cmd(["repro", "--no-run-cache", stage], root)
    seconds = time.monotonic() - t0
    new = {o: fingerprint(root, o) for o in outs}
    lock_new = (root / "dvc.lock").read_bytes()
    set_param(root, section, key, p0)
    dvc_cmd(["repro", stage], root)  # P0 back (from the run cache where it has one)
    assert {o: fingerprint(root, o) for o in outs} == previous, f"{stage}: P0 not restored"
    assert (root / "dvc.lock").read_bytes() == lock_previous, f"{stage}: P0's dvc.lock not restored"
    return StageReference(stage, outs, previous, new, seconds, p0, lock_previous, lock_new)


def kill_once(
    root: Path,
    ref: StageReference,
    seed: int,
    after: str | None = None,
    after_delay_max: float = 0.5,
) -> KillResult:
    """One SIGKILL of `dvc repro <stage>` at a random point, the checks, the resume."""
    stage = ref.stage
    section, key, p1 = CHANGES[stage]
    rng = random.Random(f"{stage}:{seed}")
    set_param(root, section, key, p1)
    try:
        return _kill_and_check(root, ref, seed, after, rng, after_delay_max)
    finally:
        set_param(root, section, key, ref.p0)
        dvc_cmd(["repro", stage], root)  # P0 back for the next kill


def _lock_after_kill(root: Path, ref: StageReference) -> str:
    """previous | new | mixed | cut: what a SIGKILL left of dvc.lock.

    DVC rewrites the whole lock once per stage it records, so `dvc repro split` writes it twice
    (check_params, then split): a kill between the two leaves a complete lock whose entries are
    each the previous or the new one ("mixed"; DVC reads it and reruns split). Each write is in
    place (open "w+", then ruamel's writes), so a kill inside one leaves the lock cut short, which
    DVC refuses ("dvc.lock validation failed"); that is DVC's, not a stage's: the lock is put back
    as a user puts back a committed one (`git checkout dvc.lock`, docs/training.md) and the checks
    go on. Anything else fails.
    """
    lock = root / "dvc.lock"
    got = lock.read_bytes()
    if got == ref.lock_previous:
        return "previous"
    if got == ref.lock_new:
        return "new"
    prev, new = (yaml.safe_load(b)["stages"] for b in (ref.lock_previous, ref.lock_new))
    with contextlib.suppress(yaml.YAMLError, TypeError, KeyError):
        stages = yaml.safe_load(got)["stages"]
        if stages.keys() == prev.keys() == new.keys() and all(
            v in (prev[k], new[k]) for k, v in stages.items()
        ):
            return "mixed"
    # Cut short: every whole line is the previous or the new lock's line there, the last a prefix.
    lines = got.split(b"\n")
    olds, news = ref.lock_previous.split(b"\n"), ref.lock_new.split(b"\n")
    whole, last = lines[:-1], lines[-1]
    if len(olds) == len(news) and len(lines) <= len(news):
        i = len(whole)
        if all(line in (olds[j], news[j]) for j, line in enumerate(whole)) and (
            olds[i].startswith(last) or news[i].startswith(last)
        ):
            lock.write_bytes(ref.lock_previous)
            return "cut"
    raise AssertionError(
        f"{ref.stage}: dvc.lock after the kill ({len(got)} bytes) is neither the previous lock, "
        "the new one, a mix of their entries, nor one of those cut short"
    )


def _kill_and_check(
    root: Path,
    ref: StageReference,
    seed: int,
    after: str | None,
    rng: random.Random,
    after_delay_max: float,
) -> KillResult:
    stage = ref.stage
    (root / LOG_DIR).mkdir(exist_ok=True)
    with open(root / LOG_DIR / f"killed-{stage}-{seed}.log", "wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "dvc"), "repro", "--no-run-cache", stage],
            cwd=root,
            env=env(EXTRA_ENV),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    t0 = time.monotonic()
    if after is not None:
        while not (root / after).exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, after_delay_max))
    else:
        deadline = t0 + rng.uniform(0.0, ref.seconds)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
    delay = time.monotonic() - t0
    finished = proc.poll() is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if finished:
        assert proc.returncode == 0, f"{stage}: dvc repro failed before the kill"
    lock_state = _lock_after_kill(root, ref)

    states = {}
    for o in ref.outs:
        fp = fingerprint(root, o)
        if fp is None:
            states[o] = "absent"
        elif fp == ref.previous[o] == ref.new[o]:
            states[o] = "unchanged"  # the change leaves this output as it was: new and previous
        elif fp == ref.previous[o]:
            states[o] = "previous"
        elif fp == ref.new[o]:
            states[o] = "new"
        elif o.startswith(LIVE_PREFIX):
            states[o] = "partial(live)"  # written in place by DVCLive during the run
        else:
            raise AssertionError(
                f"{stage} seed {seed}: {o} is partial after SIGKILL at {delay:.1f}s"
            )
        if fp is not None and not o.startswith(LIVE_PREFIX):
            inside = [f for f in fp if f.endswith(".tmp")]
            assert not inside, f"{stage}: temp files inside output {o}: {inside}"

    st = dvc_cmd(["status", "--json", stage], root)
    stale_lock = "had been killed" in st.stdout + st.stderr
    changed = bool(json.loads(st.stdout or "{}"))
    all_new = all(s in ("new", "unchanged") for s in states.values())
    assert changed or all_new, f"{stage}: dvc status clean but outputs are {states}"

    had_ckpt = (
        stage.startswith("train_")
        and (root / "models" / ".ckpt" / stage.removeprefix("train_") / "state.pt").exists()
    )
    resumed = dvc_cmd(["repro", "--no-run-cache", stage], root)
    log = resumed.stdout + resumed.stderr
    stale_lock = stale_lock or "had been killed" in log
    got = {o: fingerprint(root, o) for o in ref.outs}
    equal = got == ref.new
    leftover = tmp_files(root)
    for o in ref.outs:
        inside = [f for f in (got[o] or {}) if f.endswith(".tmp")]
        assert not inside, f"{stage}: temp files inside output {o} after resume: {inside}"
    result = KillResult(
        stage=stage,
        seed=seed,
        delay_s=round(delay, 2),
        landed=not finished,
        states=states,
        status_changed=changed,
        resumed_equal=equal,
        resumed_from_checkpoint=had_ckpt and "resuming" in log,
        stale_lock_warning=stale_lock,
        lock_state=lock_state,
        leftover_tmp=leftover,
    )
    if not equal:
        diff = {o: (got[o], ref.new[o]) for o in ref.outs if got[o] != ref.new[o]}
        raise AssertionError(f"{stage} seed {seed}: resumed outputs differ from reference: {diff}")
    if had_ckpt:
        assert "resuming" in log, f"{stage}: checkpoint present but the run did not resume"
    return result


def scan_for(root: Path, secret: str) -> tuple[int, list[str]]:
    """(files scanned, files containing `secret`) under `root`, git's packed objects aside."""
    needle = secret.encode()
    scanned, hits = 0, []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] == ".git" or not p.is_file() or p.is_symlink():
            continue
        scanned += 1
        if needle in p.read_bytes():
            hits.append(str(rel))
    return scanned, hits
