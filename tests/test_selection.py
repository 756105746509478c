"""RESULTS.md's sweep selection rule (lib.selection), on hand-derived cases."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lib.selection import select

ROOT = Path(__file__).resolve().parents[1]

IDS = ["p1", "p2", "p3", "p4"]


def _scores(primary, diversity):
    return pd.DataFrame(
        {"id": IDS, "pass_at_10": primary, "semantic_diversity": [diversity] * len(IDS)}
    )


# Pass@10 per prompt, mean semantic diversity, λ.
CASES = {
    "A": ([1, 1, 1, 0], 0.6, 3),
    "B": ([1, 1, 0, 0], 0.9, 10),
    "C": ([1, 0, 1, 1], 0.6, 1),
    "D": ([0, 0, 0, 0], 0.99, 0),
}


def _run(names):
    scores = {n: _scores(*CASES[n][:2]) for n in names}
    params = {n: {"loss.lambda": CASES[n][2]} for n in names}
    return select(scores, params).set_index("experiment")


def test_tie_within_one_paired_se_goes_to_diversity_and_not_beyond_the_tie():
    # Best mean 0.75 (A and C). Against C (the name breaks the tie on the mean; either gives the
    # same ties here):
    #   A: d = C − A = [0, −1, 0, 1]: mean 0,    sd = √(2/3) = 0.8165, SE = 0.4082 → tied
    #   B: d = [0, −1, 1, 1]: mean 0.25, sd = √(2.75/3) = 0.9574, SE = 0.4787 → tied
    #   D: d = [1, 0, 1, 1]:  mean 0.75, sd = √(0.75/3) = 0.5,    SE = 0.25   → not tied
    # Among the tied, B has the highest diversity (0.9); D's 0.99 does not count (not tied).
    out = _run("ABCD")
    assert out.loc["B", "paired_se"] == pytest.approx(math.sqrt(2.75 / 3) / 2)
    assert out.loc["D", "paired_se"] == pytest.approx(0.25)
    assert out.loc["D", "diff"] == pytest.approx(0.75)
    assert list(out["tied"].loc[list("ABCD")]) == [True, True, True, False]
    assert out[out["chosen"]].index.tolist() == ["B"]


def test_equal_diversity_goes_to_the_smaller_lambda():
    # A and C: same mean (0.75), same diversity (0.6); C has λ 1 < A's 3.
    out = _run("ACD")
    assert out[out["chosen"]].index.tolist() == ["C"]


def test_a_clear_winner_is_chosen_over_more_diverse_losers():
    # A against D: d = [1, 1, 1, 0], mean 0.75, SE = 0.5/2 = 0.25 → D not tied, A chosen.
    out = _run("AD")
    assert out[out["chosen"]].index.tolist() == ["A"]
    assert not out.loc["D", "tied"]


def test_one_prompt_apart_is_exactly_one_se_and_counts_as_tied():
    # n = 100, the best passes everywhere, X misses one prompt: d = [1, 0 × 99],
    # mean(d) = 1/100; sd = √((0.99² + 99·0.01²)/99) = √(1/100) = 0.1, SE = 0.1/√100 = 1/100.
    # "Within one SE" includes equality; floating point gives 0.01 against 0.00999… .
    ids = [f"p{i}" for i in range(100)]
    best = pd.DataFrame({"id": ids, "pass_at_10": 1.0, "semantic_diversity": 0.5})
    x = best.assign(pass_at_10=[0.0] + [1.0] * 99, semantic_diversity=0.6)
    out = select({"best": best, "x": x}, {"best": {"loss.lambda": 0}, "x": {"loss.lambda": 10}})
    out = out.set_index("experiment")
    assert out.loc["x", "diff"] == pytest.approx(0.01) and out.loc[
        "x", "paired_se"
    ] == pytest.approx(0.01)
    assert out.loc["x", "tied"] and out.loc["x", "chosen"]


def test_configurations_on_other_prompts_fail_by_name():
    scores = {"A": _scores(*CASES["A"][:2]), "B": _scores(*CASES["B"][:2]).assign(id=list("wxyz"))}
    with pytest.raises(ValueError, match="A and B were scored on different prompts"):
        select(scores, {"A": {"loss.lambda": 3}, "B": {"loss.lambda": 10}})


def test_a_missing_primary_fails_never_counts_as_zero():
    a = _scores([1.0, None, 1.0, 0.0], 0.6)
    with pytest.raises(ValueError, match="A: pass_at_10 missing for 1 prompts"):
        select({"A": a}, {"A": {"loss.lambda": 3}})


def _state(rev, name, split, lam, children=()):
    par = {"params.yaml": {"data": {"eval_split": split, "loss": {"lambda": lam}}}}
    exps = [{"revs": [c], "name": c["name"]} for c in children]
    return {"rev": rev, "name": name, "data": {"params": par}, "experiments": exps or None}


def _select_sweep():
    import importlib.util

    path = ROOT / "scripts" / "select_sweep.py"
    spec = importlib.util.spec_from_file_location("select_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_select_sweep_reads_experiments_not_their_baselines():
    # `dvc exp show --json`: the workspace and a baseline (named after its branch) come first,
    # their experiments under them; only experiments with eval_split=val are the sweep's.
    mod = _select_sweep()
    kids = [_state("c1", "val-a", "val", 3), _state("c2", "test-a", "test", 3)]
    shown = [_state("workspace", None, "val", 1), _state("b0", "main", "val", 1, kids)]
    found = mod.experiments(shown, {"eval_split": "val"})
    assert found == {"val-a": ("c1", {"eval_split": "val", "loss": {"lambda": 3}})}


def test_select_sweep_reads_a_kept_folder_and_refuses_scores_its_lock_did_not_make(tmp_path):
    # A sweep over several leases is read from reports/<domain>_sweep/<exp>/ (keep_exp folders):
    # the code sweep's λ-0 run on the H200, as kept in git (89 MBPP val problems).
    mod = _select_sweep()
    kept = tmp_path / "val-addi-l0"
    shutil.copytree(ROOT / "reports" / "code_sweep" / "val-addi-l0", kept)
    par, df = mod.read_kept(kept, {"eval_split": "val"})
    assert (par["loss"]["lambda"], par["loss"]["objective"]) == (0, "additive")
    assert len(df) == 89 and df["id"].str.startswith("MBPP-").all()
    assert mod.read_kept(kept, {"eval_split": "test"}) is None
    # The scores of one prompt fewer: no longer the output the lock records.
    scores = kept / "data" / "scores" / "polychromic.parquet"
    df.iloc[1:].to_parquet(scores)
    with pytest.raises(SystemExit, match="is not the output its dvc.lock records"):
        mod.read_kept(kept, {"eval_split": "val"})


def test_select_sweep_names_what_else_differs_between_the_kept_runs(tmp_path, capsys):
    # The code sweep ran over two leases: round 1 with the KL pass `auto` (fused on the H200),
    # round 2 with `-S loss.kl_pass=separate`. The same math, other bits: the table says so,
    # and names which runs had which. The swept keys (λ, objective) are not "other".
    mod = _select_sweep()
    folders = [ROOT / "reports" / "code_sweep" / n for n in ("val-addi-l0", "val-addi-l10",
                                                             "val-addi-l30")]  # fmt: skip
    mod.main(["--kept", *map(str, folders), "--out", str(tmp_path / "sel"), "--formats", "png"])
    md = (tmp_path / "sel.md").read_text(encoding="utf-8")
    assert "Besides loss.lambda, loss.objective, the experiments differ in:" in md, md
    assert "- `loss.kl_pass`: auto (val-addi-l0, val-addi-l10); separate (val-addi-l30)" in md, md
    assert "loss.lambda`" not in md.split("differ in:")[1]
    assert "also differ in loss.kl_pass" in capsys.readouterr().out
    # Runs of one lease differ only in the grid.
    mod.main(["--kept", *map(str, folders[:2]), "--out", str(tmp_path / "one"), "--formats", "png"])
    one = (tmp_path / "one.md").read_text(encoding="utf-8")
    assert "The experiments differ only in loss.lambda, loss.objective." in one, one


@pytest.mark.parametrize("domain", ["code", "qa"])
def test_the_committed_selection_is_the_rule_over_the_kept_folders(domain, tmp_path):
    # reports/<domain>_sweep/selection.{csv,md} are what RESULTS.md quotes (code: multiplicative
    # λ 30 over eight configurations; qa: additive λ 30 over ten, by the diversity tie-break): a
    # folder added without the selection rerun would leave them stale.
    mod = _select_sweep()
    sweep = ROOT / "reports" / f"{domain}_sweep"
    folders = sorted(sweep.glob("val-*"))
    mod.main(["--kept", *map(str, folders), "--out", str(tmp_path / "sel"), "--formats", "png"])
    for ext in ("csv", "md"):
        got = (tmp_path / f"sel.{ext}").read_text(encoding="utf-8")
        assert got == (sweep / f"selection.{ext}").read_text(encoding="utf-8"), (
            f"reports/{domain}_sweep/selection.{ext} is stale: rerun scripts/select_sweep.py --kept"
        )


# Every kept sweep run, each domain's val size after prepare (code: 89 of MBPP's 100 val problems).
KEPT_SWEEPS = sorted((ROOT / "reports").glob("*_sweep/val-*"))
VAL_PROMPTS = {"code": 89, "qa": 100}


@pytest.mark.parametrize("folder", KEPT_SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_kept_sweep_run_is_its_locks_own_and_covers_val(folder):
    # A folder copied in by hand (another run's scores, a partly scored run) would enter the next
    # selection: each must be one consistent run whose scores are its lock's, over every val prompt.
    par, df = _select_sweep().read_kept(folder, {"eval_split": "val"})
    domain = folder.parent.name.removesuffix("_sweep")
    assert par["data"]["domain"] == domain
    assert df["id"].nunique() == len(df) == VAL_PROMPTS[domain]


def test_args_out_is_the_chosen_configuration_as_dvc_exp_run_arguments(tmp_path):
    # A lease that sweeps, selects and starts the test seeds in one go reads the choice from this
    # file. The code sweep's kept folders choose multiplicative λ 30 (selection.md), which is not
    # the table's first row (additive λ 10, tied on Pass@10): the chosen row, not the top one.
    mod = _select_sweep()
    folders = sorted((ROOT / "reports" / "code_sweep").glob("val-*"))
    out = tmp_path / "chosen.args"
    mod.main(["--kept", *map(str, folders), "--out", str(tmp_path / "sel"), "--formats", "png",
              "--args-out", str(out)])  # fmt: skip
    assert out.read_text(encoding="utf-8") == "-S loss.lambda=30 -S loss.objective=multiplicative\n"
