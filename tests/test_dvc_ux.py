"""What a user sees from `dvc` itself (issue 17): stale inputs, bad params, readable tables, plots.

Each test runs the command a user types in a scratch copy of the repo on the smoke configuration.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lib.report import HEADLINE
from lib.schemas import SYSTEMS
from tests.pipeline_util import VENV_BIN, dvc, env, reproduced_copy, scratch_repo, stages_run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def _dvc_fails(args: list[str], cwd: Path) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "dvc"), *args], cwd=cwd, env=env(), capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert out.returncode != 0, f"dvc {' '.join(args)} succeeded:\n{out.stdout[-3000:]}"
    return out.stdout + out.stderr


def _set(root: Path, section: str, key: str, value) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# ---- every input is a dep -------------------------------------------------------------------


def test_editing_the_jsonl_file_marks_prepare_changed_and_repro_reads_it(tmp_path):
    # The reported bug: 300 rows added to data.jsonl_path, `dvc status` "up to date", prepare
    # skipped, pairs.parquet kept its old rows.
    root = scratch_repo(tmp_path)
    mine = root / "mine.jsonl"
    rows = [{"input": f"question number {i} here", "output": f"answer {i}"} for i in range(40)]
    mine.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    _set(root, "data", "domain", "jsonl")
    _set(root, "data", "jsonl_path", "mine.jsonl")
    dvc(["repro", "prepare"], root)
    assert len(pd.read_parquet(root / "data/processed/pairs.parquet")) == 20
    assert "prepare" not in json.loads(dvc(["status", "--json", "prepare"], root))

    mine.write_text("".join(json.dumps(r) + "\n" for r in rows))
    status = json.loads(dvc(["status", "--json", "prepare"], root))
    assert {"changed deps": {"mine.jsonl": "modified"}} in status["prepare"]
    assert "prepare" in stages_run(dvc(["repro", "prepare"], root))
    assert len(pd.read_parquet(root / "data/processed/pairs.parquet")) == 40


# ---- bad params fail first -------------------------------------------------------------------


def test_bad_params_fail_at_the_first_stage_of_dvc_repro_before_any_work(tmp_path):
    root = scratch_repo(tmp_path)
    _set(root, "lora", "dropout", 1.5)  # read only by the training stages
    out = _dvc_fails(["repro"], root)
    assert "params.yaml: lora.dropout = 1.5: accepted: 0 <= x < 1" in out
    assert stages_run(out) == {"check_params"}
    # Also when the target is one stage: check_params is upstream of everything.
    out = _dvc_fails(["repro", "train_gem"], root)
    assert stages_run(out) == {"check_params"}
    assert not (root / "data/processed/pairs.parquet").exists()


# ---- the full smoke pipeline: tables and plots ---------------------------------------------


@pytest.fixture(scope="module")
def repo(smoke_repro, tmp_path_factory):
    return reproduced_copy(smoke_repro, tmp_path_factory.mktemp("repo") / "repo")[0]


def test_alias_key_in_an_experiment_fails_before_training(repo):
    # The bug: `loss.lambda_` beside `lambda` trained with 0.3 while `dvc exp show` said 1.0.
    out = _dvc_fails(["exp", "run", "-S", "+loss.lambda_=0.3"], repo)  # `+`: DVC's "add a key"
    assert "loss.lambda_ = 0.3: unknown key (did you mean 'lambda'?" in out
    assert stages_run(out) == {"check_params"}


def _computed(stats: dict, system: str) -> set[str]:
    """The headline metrics the stats stage could compute for `system`: a missing one is null in
    the headline file (never 0), and DVC drops null metrics from its tables."""
    summary = stats["summary"]
    return {m for m in HEADLINE if (summary.get(m, {}).get(system) or {}).get("mean") is not None}


def test_metrics_show_is_the_headline_a_row_per_system(repo):
    shown = json.loads(dvc(["metrics", "show", "--json"], repo))
    files = shown[next(iter(shown))]["data"]
    assert list(files) == [f"metrics/headline/{s}.json" for s in SYSTEMS]
    stats = json.loads((repo / "metrics/stats.json").read_text())
    for s in SYSTEMS:
        row = files[f"metrics/headline/{s}.json"]["data"]
        judge = ["poly_judge_score"] if s != "polychromic" else []
        assert set(row) == {*_computed(stats, s), *judge}
        mean = stats["summary"]["rouge_l"][s]["mean"]
        assert row["rouge_l"] == pytest.approx(mean, abs=1e-4)
    text = dvc(["metrics", "show"], repo)
    assert len(text.splitlines()) == 1 + len(SYSTEMS)
    assert max(map(len, text.splitlines())) < 200  # was 67,962 characters


def test_exp_show_columns_are_params_deps_and_headline(repo):
    header = dvc(["exp", "show", "--csv"], repo).splitlines()[0].split(",")
    metrics = [c for c in header if ":" in c]
    assert metrics and all(c.startswith("metrics/headline/") for c in metrics)
    stats = json.loads((repo / "metrics/stats.json").read_text())
    computed = sum(len(_computed(stats, s)) for s in SYSTEMS)
    assert len(metrics) == computed + len(SYSTEMS) - 1  # + judge scores
    assert "bad_rows" not in ",".join(header)
    assert len(header) < 250  # was 2,030


def test_readme_exp_show_line_keeps_baseline_and_polychromic_only(repo):
    line = next(
        ln.strip().split("  #")[0]
        for ln in (ROOT / "README.md").read_text().splitlines()
        if ln.strip().startswith("dvc exp show --only-changed")
    )
    out = subprocess.run(
        line + " --csv", shell=True, cwd=repo, env=env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split(",")
    shown = {c.split(":")[0] for c in header if ":" in c}
    assert shown == {"metrics/headline/baseline.json", "metrics/headline/polychromic.json"}
    assert not [c for c in header if "/" in c and ":" not in c]  # no dependency hashes


def test_plots_show_works_offline_with_one_training_figure(repo, tmp_path):
    dvc(["plots", "show", "-o", str(tmp_path / "p")], repo)
    html = (tmp_path / "p" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", html), "charts that load from a CDN"
    imgs = re.findall(r"<img[^>]+src=\"([^\"]+)\"", html)
    assert len(imgs) == 5 and sum("training" in i for i in imgs) == 1
