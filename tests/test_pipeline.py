"""End to end: `dvc repro` on the smoke configuration in a scratch copy of the repo."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml

from tests.pipeline_util import dvc, scratch_repo, stages_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = scratch_repo(tmp_path_factory.mktemp("repo"))
    out = dvc(["repro"], root)
    return root, out


def _declared_outputs(root):
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    outs, metrics = [], []
    for name, stage in spec["stages"].items():
        items = (
            [(name, None)]
            if "foreach" not in stage
            else [
                (name, k)
                for k in (
                    stage["foreach"]
                    if isinstance(stage["foreach"], list)
                    else stage["foreach"].keys()
                )
            ]
        )
        body = stage.get("do", stage)
        for _, key in items:

            def sub(path, key=key):
                return path.replace("${item}", str(key)).replace("${key}", str(key))

            for entry in body.get("outs", []):
                outs.append(sub(entry if isinstance(entry, str) else next(iter(entry))))
            for entry in body.get("metrics", []):
                metrics.append(sub(entry if isinstance(entry, str) else next(iter(entry))))
    return outs, metrics


def test_every_declared_output_exists_and_metrics_parse(repo):
    root, out = repo
    outs, metrics = _declared_outputs(root)
    assert outs and metrics
    for path in outs + metrics:
        assert (root / path).exists(), f"{path} missing after dvc repro\n{out[-2000:]}"
    for path in metrics:
        json.loads((root / path).read_text())
    shown = json.loads(dvc(["metrics", "show", "--json"], root))
    assert shown, "dvc metrics show found nothing"


def test_second_repro_is_a_noop(repo):
    root, _ = repo
    out = dvc(["repro"], root)
    assert stages_run(out) == set() and "up to date" in out


def test_split_override_reruns_split_but_not_prepare(repo):
    root, _ = repo
    out = dvc(["exp", "run", "-S", "split.max_test=3"], root)
    ran = stages_run(out)
    assert "split" in ran and "prepare" not in ran


def test_domain_change_reruns_prepare(repo):
    root, _ = repo
    out = dvc(["exp", "run", "-S", "data.domain=qa"], root)
    ran = stages_run(out)
    assert {"prepare", "split"} <= ran
    pairs = root / "data/processed/pairs.parquet"
    import pandas as pd

    assert set(pd.read_parquet(pairs)["domain"]) == {"qa"}


def test_push_pull_roundtrip_through_default_remote(repo):
    root, _ = repo
    target = root / "data/processed/pairs.parquet"
    before = hashlib.md5(target.read_bytes()).hexdigest()
    dvc(["push"], root)
    assert any((root / ".dvc-remote").rglob("*")), "nothing reached the default remote"
    target.unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    dvc(["pull"], root)
    assert hashlib.md5(target.read_bytes()).hexdigest() == before
