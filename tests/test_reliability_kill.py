"""SIGKILL in the middle of `dvc repro <stage>`: nothing partial, nothing lost, same results.

See tests/reliability/kill.py for the protocol. CI kills split once at a random point; the
slow suite also kills train_baseline twice (once just after its checkpoint, so the resume path
runs; once at a random point); every dvc run has a canary ANTHROPIC_API_KEY in its environment, and the last test scans
every file the runs wrote (logs included) for it. The slow sweep kills every stage of the
pipeline with more seeds (also run by `python -m tests.reliability.report`).
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from lib.io import read_parquet
from lib.schemas import EXAMPLES
from tests.pipeline_util import scratch_repo
from tests.reliability import kill as K

# Made at run time: a literal would be found in this file's copy inside the scratch repo.
CANARY = f"sk-ant-CANARY-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    old = dict(K.EXTRA_ENV)
    K.EXTRA_ENV.update({"ANTHROPIC_API_KEY": CANARY})
    root = scratch_repo(tmp_path_factory.mktemp("killrepo"))
    # Enough steps after the first checkpoint (step 2) that a kill within 0.1 s of it lands in the
    # run: at the smoke config's 3 steps, a fast step finished the run first.
    K.set_param(root, "train", "max_steps", 12)
    K.dvc_cmd(["repro", "train_baseline"], root)
    yield root
    K.EXTRA_ENV.clear()
    K.EXTRA_ENV.update(old)


def test_split_failure_between_files_keeps_the_previous_directory(tmp_path, monkeypatch):
    import stages.split
    from tests.reliability import artefacts as A
    from tests.reliability.stage_inputs import smoke_params

    params = smoke_params(tmp_path / "params.yaml")
    pairs = A.write_valid(tmp_path / "pairs.parquet", A.PAIRS, A.pairs_frame())
    argv = ["--pairs", str(pairs), "--out", str(tmp_path / "split"), "--params", str(params)]
    argv += ["--report", str(tmp_path / "split.json")]
    stages.split.main(argv)
    before = {p.name: p.read_bytes() for p in (tmp_path / "split").iterdir()}
    assert sorted(before) == ["test.parquet", "train.parquet", "val.parquet"]

    calls = []
    real = stages.split.write_parquet

    def dies_on_second(df, path, schema):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between files")
        real(df, path, schema)

    monkeypatch.setattr(stages.split, "write_parquet", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        stages.split.main(argv)
    after = {p.name: p.read_bytes() for p in (tmp_path / "split").iterdir()}
    assert after == before
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(read_parquet(tmp_path / "split" / "val.parquet", EXAMPLES)) > 0


@pytest.mark.e2e
def test_split_killed_at_a_random_point(repo):
    ref = K.reference(repo, "split")
    r = K.kill_once(repo, ref, seed=0)
    assert r.resumed_equal


@pytest.mark.e2e
def test_a_dvc_lock_cut_by_the_kill_is_put_back_and_the_resume_matches(repo):
    # DVC writes dvc.lock in place: a SIGKILL inside that write (once in CI, 2026-12-01) left it
    # 0 bytes and DVC refused it ("dvc.lock validation failed"). The harness tells that apart from
    # a stage's partial output, puts the previous lock back (a user's `git checkout dvc.lock`),
    # and the resumed run must still equal the uninterrupted one. Here the cut is made by hand:
    # P1 set, the new lock's first 40 bytes written, as the kill would leave them.
    ref = K.reference(repo, "split")
    assert ref.lock_new != ref.lock_previous
    section, key, p1 = K.CHANGES["split"]
    K.set_param(repo, section, key, p1)
    try:
        (repo / "dvc.lock").write_bytes(ref.lock_new[:40])
        refused = K.dvc_cmd(["status"], repo, check=False)
        assert refused.returncode != 0 and "validation failed" in refused.stdout + refused.stderr
        assert K._lock_after_kill(repo, ref) == "cut"
        assert (repo / "dvc.lock").read_bytes() == ref.lock_previous
        K.dvc_cmd(["repro", "--no-run-cache", "split"], repo)
        assert {o: K.fingerprint(repo, o) for o in ref.outs} == ref.new
    finally:
        K.set_param(repo, section, key, ref.p0)
        K.dvc_cmd(["repro", "split"], repo)
    # DVC records each stage with its own write of the whole lock: a kill between two leaves
    # complete entries, each the previous or the new one (seen: check_params new, split previous).
    prev, new = (yaml.safe_load(b)["stages"] for b in (ref.lock_previous, ref.lock_new))
    mixed = {"schema": "2.0", "stages": {**prev, "split": new["split"]}}
    # Anything else is neither DVC's write cut short nor its entries: the harness fails.
    wrong = ref.lock_new.replace(b"max_train: 15", b"max_train: 99")
    assert wrong != ref.lock_new
    try:
        (repo / "dvc.lock").write_text(yaml.safe_dump(mixed, sort_keys=False))
        assert K._lock_after_kill(repo, ref) == "mixed"
        (repo / "dvc.lock").write_bytes(wrong)
        with pytest.raises(AssertionError, match="nor one of those cut short"):
            K._lock_after_kill(repo, ref)
    finally:
        (repo / "dvc.lock").write_bytes(ref.lock_previous)


# In the slow suite: CI has the in-process resume test (tests/test_train.py). It once failed here
# (1 of 3 runs trained another adapter): not the resume but MKL's VML first-call race
# (pytorch#188792), which made ~1 in 80 runs under load compute the rotary cos wrong on one
# thread's chunk, fresh runs too; lib/vml.py closes it (tests/test_vml.py).
@pytest.mark.slow
@pytest.mark.e2e
def test_train_killed_after_its_checkpoint_resumes_to_the_same_adapter_and_curves(repo):
    ref = K.reference(repo, "train_baseline")
    assert ref.new != ref.previous
    r = K.kill_once(repo, ref, seed=0, after="models/.ckpt/baseline/state.pt", after_delay_max=0.1)
    assert r.resumed_from_checkpoint and r.resumed_equal
    assert r.states["models/baseline"] == "absent"
    r = K.kill_once(repo, ref, seed=1)
    assert r.resumed_equal


@pytest.mark.e2e
def test_no_run_wrote_the_api_key_anywhere(repo):
    scanned, hits = K.scan_for(repo, CANARY)
    assert scanned > 50 and (repo / K.LOG_DIR / "dvc.log").exists()
    assert hits == []


@pytest.mark.slow
@pytest.mark.e2e
def test_full_pipeline_with_canary_key_then_every_stage_killed(tmp_path):
    # The report's pipeline section with one random kill per stage (+ one after each training
    # checkpoint): ~15 min on 2 cores.
    from tests.reliability.report import pipeline_sweep

    out = pipeline_sweep(tmp_path, kill_seeds=1)
    assert out["canary_hits"] == 0 and out["files_scanned"] > 100
    assert out["resumed_equal"] == out["kills"] >= len(K.CHANGES)
    assert out["resumed_from_checkpoint"] >= 2  # a kill can land just after the last step
