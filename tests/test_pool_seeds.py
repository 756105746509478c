"""The seed-mean per prompt (lib.across_seeds.pool_scores) and its stats table (scripts/pool_seeds.py).

Hand-derived where the numbers are small; the script's tests are checked against scipy's Wilcoxon
on seed-mean differences computed here with numpy, not through pool_scores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats as sps

from lib.across_seeds import pool_scores
from lib.io import write_parquet
from lib.schemas import SCORES, SYSTEMS
from tests.score_tables import score_table

ROOT = Path(__file__).resolve().parents[1]


def _two_prompts(system: str, p10: list[float], n_pass: list[int | None]):
    df = score_table(system, n_ids=2)
    df["pass_at_10"] = p10
    df["n_pass"] = n_pass
    return df


def test_pool_scores_means_each_prompt_over_the_runs_that_have_it():
    # Pass@10 of prompts q00, q01: run a [1.0, 0.4], run b [0.5, NaN] (b could not compute q01)
    #   q00: (1.0 + 0.5) / 2 = 0.75;  q01: 0.4 / 1 = 0.4, not 0.4 / 2 and not NaN.
    # semantic_diversity_train is NaN in every run: it stays NaN (missing, never 0).
    # n_pass adds up: q00 3 + 5 = 8, q01 4 + 6 = 10; n_samples 10 + 10.
    runs = {
        "a": {"polychromic": _two_prompts("polychromic", [1.0, 0.4], [3, 4])},
        "b": {"polychromic": _two_prompts("polychromic", [0.5, math.nan], [5, 6])},
    }
    got = pool_scores(runs)["polychromic"]
    assert list(got["id"]) == ["q00", "q01"]
    assert got["pass_at_10"].tolist() == pytest.approx([0.75, 0.4])
    assert got["semantic_diversity_train"].isna().all()
    assert got["n_pass"].tolist() == [8, 10] and got["n_samples"].tolist() == [20, 20]
    assert list(got.columns) == list(SCORES.columns)


def test_pool_scores_keeps_null_n_pass_where_no_run_has_a_checker():
    runs = {r: {"gem": _two_prompts("gem", [0.2, 0.4], [None, None])} for r in ("a", "b")}
    assert pool_scores(runs)["gem"]["n_pass"].isna().all()


def test_pool_scores_refuses_runs_on_other_prompts():
    other = score_table("baseline", n_ids=3)  # q00..q02 against q00..q01
    runs = {"s0": {"baseline": score_table("baseline", n_ids=2)}, "s1": {"baseline": other}}
    with pytest.raises(ValueError, match=r"run 's1', baseline: 3 prompts.*'q02' is in one only"):
        pool_scores(runs)


def test_pool_scores_refuses_a_run_without_a_system():
    runs = {"s0": {"gem": score_table("gem")}, "s1": {}}
    with pytest.raises(ValueError, match=r"run 's1' has no scores for 'gem'"):
        pool_scores(runs)


def _script():
    spec = importlib.util.spec_from_file_location("pool_seeds", ROOT / "scripts" / "pool_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pool(tmp_path: Path, out: Path) -> None:
    runs = [a for seed in ("seed0", "seed1") for a in ("--run", str(tmp_path / seed))]
    _script().main([*runs, "--out", str(out)])


def _kept_run(folder: Path, train_seed: int, table_seed: int, n_ids: int = 12) -> dict:
    """A folder shaped like keep_exp.py's with --outs data/scores."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["seed"] = train_seed
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    enc = {
        "encoders": {
            "train": {"model": "all-MiniLM-L6-v2"},
            "eval": {"model": "all-mpnet-base-v2"},
            "same": False,
        },
        "bertscore": {"layer": 8, "hash": "h"},
    }
    tables = {}
    for s in SYSTEMS:
        tables[s] = score_table(s, n_ids, seed=table_seed)
        write_parquet(tables[s], folder / "data" / "scores" / f"{s}.parquet", SCORES)
        (folder / "metrics").mkdir(exist_ok=True)
        (folder / "metrics" / f"{s}.json").write_text(json.dumps(enc))
    return tables


def test_pool_seeds_tests_the_seed_mean_difference_of_each_prompt(tmp_path):
    a = _kept_run(tmp_path / "seed0", 0, table_seed=1)
    b = _kept_run(tmp_path / "seed1", 1, table_seed=2)
    out = tmp_path / "pooled"
    _pool(tmp_path, out)
    stats = json.loads(out.with_suffix(".json").read_text())
    m = "pass_at_10"
    # Independent of pool_scores: each prompt's difference averaged over the two runs, by hand.
    per_run = [t["polychromic"][m].to_numpy() - t["baseline"][m].to_numpy() for t in (a, b)]
    diffs = (per_run[0] + per_run[1]) / 2
    c = stats["comparisons"]["baseline"][m]
    assert c["n_pairs"] == 12
    assert c["diff"] == pytest.approx(diffs.mean())
    assert c["sd_diff"] == pytest.approx(diffs.std(ddof=1))
    poly = (a["polychromic"][m].to_numpy() + b["polychromic"][m].to_numpy()) / 2
    base = (a["baseline"][m].to_numpy() + b["baseline"][m].to_numpy()) / 2
    assert c["p_wilcoxon"] == pytest.approx(sps.wilcoxon(poly, base).pvalue)
    assert stats["summary"][m]["polychromic"]["mean"] == pytest.approx(poly.mean())
    md = out.with_suffix(".md").read_text()
    assert "mean over the 2 training seeds' runs (seed0, seed1)" in md
    assert "| Pass@10" in md


def test_pool_seeds_refuses_runs_that_differ_beyond_the_training_seed(tmp_path):
    _kept_run(tmp_path / "seed0", 0, table_seed=1)
    _kept_run(tmp_path / "seed1", 1, table_seed=2)
    p = yaml.safe_load((tmp_path / "seed1" / "params.yaml").read_text())
    p["loss"]["lambda"] = 99.0
    (tmp_path / "seed1" / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(SystemExit, match=r"seed1/params.yaml has loss.lambda = 99.0"):
        _pool(tmp_path, tmp_path / "o")
    assert not (tmp_path / "o.json").exists()


def test_pool_seeds_names_a_run_kept_without_its_scores(tmp_path):
    _kept_run(tmp_path / "seed0", 0, table_seed=1)
    _kept_run(tmp_path / "seed1", 1, table_seed=2)
    for f in (tmp_path / "seed1" / "data" / "scores").iterdir():
        f.unlink()
    with pytest.raises(SystemExit, match=r"seed1/data/scores/ has no scores: keep them with"):
        _pool(tmp_path, tmp_path / "o")
    assert not (tmp_path / "o.md").exists()


KEPT = {  # RESULTS.md's pooled tables and the kept runs they come from
    "code_test": ("seed0", "seed1", "seed2"),
    "qa_test": ("seed0", "seed1", "seed2"),
    "social_test": ("seed0", "seed1", "seed2"),
}


def _lock_md5(lock: Path, path: str) -> str:
    """The md5 a dvc.lock records for an output `path` (the stage that writes it)."""
    for stage in yaml.safe_load(lock.read_text())["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    raise AssertionError(f"{lock}: no output {path}")


@pytest.mark.parametrize("domain", sorted(KEPT))
def test_kept_scores_are_the_runs_own_outputs(domain):
    # A kept score file that is not the one its run's dvc.lock recorded (a copy from another seed,
    # a rescore under other code) would make the pooled table another experiment's.
    for seed in KEPT[domain]:
        run = ROOT / "reports" / domain / seed
        files = sorted((run / "data" / "scores").glob("*.parquet"))
        assert [f.stem for f in files] == sorted(SYSTEMS)
        for f in files:
            want = _lock_md5(run / "dvc.lock", f"data/scores/{f.name}")
            assert hashlib.md5(f.read_bytes()).hexdigest() == want, f


@pytest.mark.parametrize("domain", sorted(KEPT))
def test_kept_pooled_tables_regenerate_byte_for_byte(domain, tmp_path, monkeypatch):
    # RESULTS.md quotes reports/<domain>/pooled.*: a change to pooling or to the stats that
    # would give other numbers leaves them stale, and this fails until they are made again.
    monkeypatch.chdir(ROOT)  # the runs as RESULTS.md names them: paths from the repo root
    folder = Path("reports") / domain
    runs = [a for seed in KEPT[domain] for a in ("--run", str(folder / seed))]
    _script().main([*runs, "--out", str(tmp_path / "pooled")])
    for suffix in (".md", ".json"):
        got = (tmp_path / "pooled").with_suffix(suffix).read_text()
        want = (folder / "pooled").with_suffix(suffix).read_text()
        assert got == want, suffix
