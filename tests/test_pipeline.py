"""End to end: `dvc repro` on the smoke configuration in a scratch copy of the repo."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pytest
import yaml

from lib.schemas import SYSTEMS
from tests.pipeline_util import dvc, reproduced_copy, scratch_repo, stages_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(smoke_repro, tmp_path_factory):
    return reproduced_copy(smoke_repro, tmp_path_factory.mktemp("repo") / "repo")


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


def _directly_affected(root, section_key: str, value) -> set[str]:
    """Stages whose declared params change when params.yaml's `section_key` is set to `value`."""
    params_path = root / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    section, key = section_key.split(".")
    params[section][key] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(dvc(["status", "--json"], root))
    finally:
        params_path.write_text(original)
    return set(status)


@pytest.mark.parametrize(
    "key, value, stages",
    [
        ("data.domain", "qa", {"prepare"}),
        ("split.max_test", 2, {"split"}),
        ("train.lr", 0.001, {"train_baseline", "train_gem", "train_polychromic"}),
        ("gem.beta", 0.5, {"train_gem"}),
        ("generate.temperature", 1.0, {f"generate@{s}" for s in SYSTEMS}),
        ("score.qa_f1_threshold", 0.7, {f"score@{s}" for s in SYSTEMS}),
        ("judge.samples_per_input", 2, {"judge"}),
        ("stats.alpha", 0.1, {"stats"}),
    ],
)
def test_each_stage_declares_exactly_the_params_it_reads(repo, key, value, stages):
    root, _ = repo
    # check_params reads the whole file: every edit reruns it (its output is unchanged when valid)
    assert _directly_affected(root, key, value) == stages | {"check_params"}


def test_lambda_override_reruns_polychromic_only(repo):
    root, _ = repo
    adapter = root / "models/polychromic/adapter_model.safetensors"
    before = hashlib.md5(adapter.read_bytes()).hexdigest()
    out = dvc(["exp", "run", "-S", "loss.lambda=0.7"], root)
    ran = stages_run(out)
    # Downstream of generate@polychromic, dvc skips what an unchanged output does not reach (a
    # 3-step tiny-random adapter can sample the same 8 tokens at λ 0.7 as at 1.0).
    assert {"train_polychromic", "generate@polychromic"} <= ran
    assert ran <= {
        "check_params",
        "train_polychromic",
        "generate@polychromic",
        "score@polychromic",
        "judge",
        "stats",
        "plot",
    }
    assert hashlib.md5(adapter.read_bytes()).hexdigest() != before, "λ did not reach training"
    assert yaml.safe_load((root / "params.yaml").read_text())["loss"]["lambda"] == 0.7


def test_eval_split_val_reruns_evaluation_only_and_labels_the_table(repo):
    # Tuning on val: no training reruns, every system is sampled on val, and the table says so.
    root, _ = repo
    out = dvc(["exp", "run", "-S", "eval_split=val"], root)
    assert stages_run(out) == {
        "check_params",
        *(f"generate@{s}" for s in SYSTEMS),
        *(f"score@{s}" for s in SYSTEMS),
        "judge",
        "stats",
        "plot",
    }
    val_ids = set(pd.read_parquet(root / "data/split/val.parquet")["id"])
    generated = pd.read_parquet(root / "data/generations/polychromic.parquet")
    assert set(generated["id"]) == val_ids
    stats = json.loads((root / "metrics/stats.json").read_text())
    assert stats["settings"]["split"] == "val"
    assert set(stats["n_prompts"].values()) == {len(val_ids)}
    assert "**val** split" in (root / "metrics/table.md").read_text()
    assert "on the val prompts" in (root / "metrics/table.tex").read_text()


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


def test_code_domain_smoke_end_to_end(tmp_path):
    """MBPP trains, MBPP val ids validate, HumanEval tests: `dvc repro` on configs/smoke-code.yaml.

    Bugs caught: a HumanEval problem reaching train/val through the real stages, code samples
    not executed against HumanEval's tests, a table that hides a shared training/eval encoder.
    """
    import sys

    from tests.pipeline_util import run

    root = scratch_repo(tmp_path)
    run([sys.executable, "scripts/use_params.py", "configs/smoke-code.yaml"], root)
    dvc(["repro"], root)
    data = json.loads((root / "metrics/data.json").read_text())
    assert data["domain"] == "code"
    assert data["rows_by_fixed_split"] == {"test": 164, "train": 22, "val": 3}
    assert data["dropped_by_reason"] == {"over_max_pairs": 974 - 25}
    parts = {n: pd.read_parquet(root / f"data/split/{n}.parquet") for n in ("train", "val", "test")}
    source = {n: {json.loads(m)["source"] for m in p["meta"]} for n, p in parts.items()}
    assert source == {"train": {"mbpp"}, "val": {"mbpp"}, "test": {"humaneval"}}
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (16, 3, 3)
    test_ids = set(parts["test"]["id"])
    for system in SYSTEMS:
        gens = pd.read_parquet(root / f"data/generations/{system}.parquet")
        assert set(gens["id"]) == test_ids
        m = json.loads((root / f"metrics/{system}.json").read_text())
        assert m["domains"] == ["code"] and m["checker"] == {"code": "humaneval-tests-in-sandbox"}
        assert m["n_prompts_with"]["pass_at_1"] == 3  # executed: a number, never missing
        # the smoke measures with MiniLM (cheap), so the instruments coincide, and say so
        assert m["encoders"]["eval"]["model"] == m["encoders"]["train"]["model"]
        assert m["encoders"]["same"] is True
    table = (root / "metrics/table.md").read_text()
    assert "Caution: evaluation and training share one encoder (all-MiniLM-L6-v2)" in table


def _stages_importing(root, module: str) -> set[str]:
    """From the import graph (scripts/deps.py, itself tested against `sys.modules` in test_deps)."""
    from scripts import deps

    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    found = set()
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        files = {p.as_posix() for p in deps.import_closure(deps.stage_module(body["cmd"]), root)}
        if module in files:
            keys = stage.get("foreach")
            found |= {f"{name}@{k}" for k in keys} if keys else {name}
    return found


@pytest.mark.parametrize(
    "module", ["lib/packing.py", "lib/figures.py", "lib/judge/cache.py", "lib/io.py"]
)
def test_touching_a_module_marks_exactly_the_stages_that_import_it(repo, module):
    root, _ = repo
    expected = _stages_importing(root, module)
    if module == "lib/packing.py":  # the issue's case: the trainers' packed forward pass
        assert {"train_baseline", "train_gem", "train_polychromic"} <= expected
    path = root / module
    original = path.read_bytes()
    path.write_bytes(original + b"\n# touched\n")
    try:
        status = json.loads(dvc(["status", "--json"], root))
    finally:
        path.write_bytes(original)
    assert set(status) == expected


def test_incomplete_judge_is_not_locked_and_the_rerun_pays_only_the_rest(repo):
    """Issue 17 through `dvc repro`: the API budget runs out, the stage fails and DVC keeps
    reporting judge as changed; the rerun with budget asks only what is not cached."""
    import subprocess

    from tests.fakes import CANARY, FakeAPI
    from tests.pipeline_util import VENV_BIN, env

    root, _ = repo
    params_path = root / "params.yaml"
    original = params_path.read_text()
    api = FakeAPI()
    try:

        def repro_judge(max_calls: int) -> subprocess.CompletedProcess:
            params = yaml.safe_load(original)
            params["judge"].update(
                backend="anthropic", base_url=api.url, max_calls=max_calls, max_retries=0
            )
            params_path.write_text(yaml.safe_dump(params, sort_keys=False))
            return subprocess.run(
                [str(VENV_BIN / "dvc"), "repro", "judge"],
                cwd=root,
                env=env({"ANTHROPIC_API_KEY": CANARY}),
                capture_output=True,
                text=True,
                timeout=600,
            )

        first = repro_judge(max_calls=5)
        assert first.returncode != 0
        assert "left open (stopped: max_calls)" in first.stdout + first.stderr
        assert len(api.requests) == 5
        assert "judge" in json.loads(dvc(["status", "--json"], root))  # not locked as done
        second = repro_judge(max_calls=1000)
        assert second.returncode == 0, second.stderr[-3000:]
        total = len(api.requests)
        metrics = json.loads((root / "metrics/judge.json").read_text())
        assert metrics["n_missing"] == 0 and metrics["usage"]["calls"] == total - 5
        # No question was paid twice, across the failed run and the rerun (tiny-random's samples
        # repeat, so some questions are identical: those share one answer too).
        bodies = {json.dumps(r, sort_keys=True) for r in api.requests}
        assert len(bodies) == total
        assert "judge" not in json.loads(dvc(["status", "--json"], root))
    finally:
        api.close()
        params_path.write_text(original)
