"""lib.figures (data frames, Pareto front), the plot stage and scripts/pareto.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from score_tables import PARAMS_YAML, score_table, write_judgments, write_scores

from lib import figures as F
from lib import pareto as P
from lib.config import params_for
from lib.experiments import lookup
from lib.schemas import SCORE_METRICS, SYSTEMS
from lib.stats import compute_stats

ROOT = Path(__file__).resolve().parents[1]


def test_non_dominated_exact():
    pts = [
        (0.1, 0.9),  # front: best quality
        (0.5, 0.5),  # front
        (0.4, 0.4),  # dominated by (0.5, 0.5)
        (0.9, 0.1),  # front: best diversity
        (0.5, 0.3),  # dominated by (0.5, 0.5): equal x, lower y
        (0.5, 0.5),  # duplicate of a front point: stays on the front
        (math.nan, 2.0),  # missing: never on the front, dominates nothing
        (0.2, 0.2),  # dominated
    ]
    assert P.non_dominated(pts) == [True, True, False, True, False, True, False, False]
    assert P.non_dominated([]) == []
    assert P.non_dominated([(0.0, 0.0)]) == [True]


def _exp(name, lam, metrics):
    data = {
        "rev": name,
        "params": {"params.yaml": {"data": {"seed": 42, "loss": {"lambda": lam}}}},
        "metrics": {"metrics/polychromic.json": {"data": metrics}} if metrics else {},
    }
    return {"rev": name, "name": name, "data": data, "error": None, "experiments": None}


def exp_show_json():
    ws = _exp("workspace", 0.5, {"semantic_diversity": 0.30, "rouge_l": 0.20})
    head = _exp("main", 0.5, {"semantic_diversity": 0.30, "rouge_l": 0.20})
    exps = [
        _exp("exp-a", 0.0, {"semantic_diversity": 0.10, "rouge_l": 0.30}),
        _exp("exp-b", 1.0, {"semantic_diversity": 0.45, "rouge_l": 0.10}),
        _exp("exp-c", 0.3, {"semantic_diversity": 0.20, "rouge_l": 0.15}),  # dominated by 0.5
        _exp("exp-d", 0.7, None),  # failed: no metrics file
        _exp("exp-e", 0.9, {"mean": {"semantic_diversity": 0.40, "rouge_l": 0.05}}),  # nested
    ]
    head["experiments"] = [{"revs": [e], "executor": None, "name": e["name"]} for e in exps]
    return [ws, head]


def test_experiment_rows_and_front():
    df = P.experiment_rows(
        exp_show_json(), "metrics/polychromic.json", "semantic_diversity", "rouge_l"
    )
    by = df.set_index("loss.lambda")
    assert sorted(by.index) == [
        0.0,
        0.3,
        0.5,
        0.9,
        1.0,
    ]  # workspace == main counted once; d skipped
    assert by["on_front"].to_dict() == {0.5: True, 0.0: True, 1.0: True, 0.3: False, 0.9: False}
    assert by.loc[0.9, "diversity"] == 0.40  # read through the nested `mean`
    assert by.loc[0.5, "label"] == "λ=0.5"


def test_front_rows_label_names_lambda_and_gives_other_params_by_value():
    df = pd.DataFrame(
        {
            "loss.lambda": [10, 30],
            "loss.objective": ["additive", "passk"],
            "diversity": [0.80, 0.79],
            "quality": [0.98, 0.98],
        }
    )
    out = P.front_rows(df, ("loss.lambda", "loss.objective"))
    assert out["label"].tolist() == ["λ=10, additive", "λ=30, passk"]
    assert out["on_front"].tolist() == [True, False]  # same quality, less diverse: dominated


def test_experiment_rows_filter_by_params_and_name_the_workspace_after_its_experiment():
    def exp(name, lam, split, div, q):
        e = _exp(name, lam, {"mean": {"semantic_diversity": div, "pass_at_10": q}})
        e["data"]["params"]["params.yaml"]["data"]["eval_split"] = split
        return e

    ws = exp("workspace", 1.0, "val", 0.8, 0.9)  # holds the last experiment's results
    head = exp("main", 0.3, "test", 0.7, 0.95)  # the committed test run: not a tuning point
    head["experiments"] = [
        {"revs": [exp("val-a", 0.0, "val", 0.6, 0.9), exp("val-b", 1.0, "val", 0.8, 0.9)]}
    ]
    df = P.experiment_rows(
        [ws, head],
        "metrics/polychromic.json",
        "semantic_diversity",
        "pass_at_10",
        where={"eval_split": "val"},
    )
    assert sorted(df["experiment"]) == ["val-a", "val-b"]
    assert df.set_index("experiment")["on_front"].to_dict() == {"val-a": False, "val-b": True}


def test_lookup_ambiguous_key_raises():
    with pytest.raises(ValueError, match="ambiguous"):
        lookup({"a": {"x": 1}, "b": {"x": 2}}, "x")
    assert lookup({"a": {"x": 1}}, "a.x") == 1 and lookup({"a": 1}, "zz") is None


def test_lookup_reads_the_score_stages_own_metrics_layout():
    # metrics/<system>.json from lib.scoring.summarise nests every metric twice (`mean` and
    # `n_prompts_with`); the Pareto script must read the mean, not call it ambiguous.
    import numpy as np
    import pandas as pd

    from lib.scoring import SCORE_METRICS, summarise

    scores = pd.DataFrame({m: [0.2, 0.4] for m in SCORE_METRICS})
    scores["n_pass"] = pd.array([1, 3], dtype="Int64")
    summary = summarise(scores, "polychromic")
    assert lookup(summary, "semantic_diversity") == pytest.approx(0.3)
    assert lookup(summary, "pass_at_10") == pytest.approx(0.3)
    assert np.isfinite(lookup(summary, "mean_n_pass"))


def test_pareto_labels_of_three_tied_configurations_do_not_overlap():
    # The code sweep (reports/code_sweep/selection.csv, rounded): three configurations tie at
    # Pass@10 0.652 within 0.011 of semantic diversity, a fourth sits 0.012 below. Labels put
    # above-right, or below when a neighbour's label was above, stacked two of the three ties'
    # labels on one another ("λ=30, additive" over "λ=30, multiplicative").
    table = pd.DataFrame(
        {
            "loss.lambda": [0, 3, 10, 30, 10, 30, 10, 30],
            "loss.objective": ["additive"] * 4 + ["multiplicative"] * 2 + ["passk"] * 2,
            "diversity": [0.111, 0.131, 0.144, 0.149, 0.145, 0.155, 0.126, 0.132],
            "quality": [0.584, 0.629, 0.652, 0.652, 0.640, 0.652, 0.596, 0.618],
        }
    )
    fig = P.pareto_figure(P.front_rows(table, ("loss.lambda", "loss.objective")), "div", "q")
    boxes = P.label_boxes(fig)
    assert len(boxes) == 8
    clashes = [(i, j) for i in range(8) for j in range(i + 1, 8) if boxes[i].overlaps(boxes[j])]
    assert clashes == [], [fig.axes[0].texts[i].get_text() for pair in clashes for i in pair]


def test_pareto_script(tmp_path):
    (tmp_path / "exps.json").write_text(json.dumps(exp_show_json()))
    out = tmp_path / "pareto"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "pareto.py"),
            "--exp-json",
            str(tmp_path / "exps.json"),
            "--metrics-file",
            "metrics/polychromic.json",
            "--system",
            "",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert "3 on the front" in r.stdout
    assert (tmp_path / "pareto.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    csv = pd.read_csv(tmp_path / "pareto.csv")
    assert csv["on_front"].sum() == 3


def test_pareto_script_from_a_table_already_read(tmp_path):
    # select_sweep's table: diversity and the primary metric per experiment. (0.80, 0.98) and
    # (0.79, 0.99) trade off, (0.78, 0.95) is beaten by both on both axes: two on the front.
    rows = tmp_path / "selection.csv"
    pd.DataFrame(
        {
            "experiment": ["a", "b", "c"],
            "loss.lambda": [10, 0, 3],
            "loss.objective": ["additive", "additive", "passk"],
            "primary": [0.98, 0.99, 0.95],
            "diversity": [0.80, 0.79, 0.78],
        }
    ).to_csv(rows, index=False)
    out = tmp_path / "pareto"
    cmd = [sys.executable, str(ROOT / "scripts" / "pareto.py"), "--rows", str(rows)]
    cmd += ["--rows-quality", "primary", "--param", "loss.lambda", "--param", "loss.objective"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    csv = pd.read_csv(tmp_path / "pareto.csv").set_index("experiment")
    assert csv["on_front"].to_dict() == {"a": True, "b": True, "c": False}
    assert csv.loc["a", "label"] == "λ=10, additive"
    r = subprocess.run([*cmd[:4], "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "has no column ['quality']" in r.stderr


def _stats(**drop):
    scores = {s: score_table(s) for s in SYSTEMS}
    for metric, system in drop.items():
        scores[system][metric] = np.nan
    return json.loads(
        json.dumps(compute_stats(scores, params_for("stats", bootstrap=200), 0), allow_nan=False)
    )


def test_frames_follow_stats():
    st = _stats(pass_at_1="gem")
    pk = F.pass_at_k_frame(st)
    assert len(pk) == 50 and list(pk.columns) == ["system", "k", "pass_at_k", "ci_low", "ci_high"]
    row = pk[(pk["system"] == "polychromic") & (pk["k"] == 10)].iloc[0]
    assert row["pass_at_k"] == st["summary"]["pass_at_10"]["polychromic"]["mean"]
    assert math.isnan(pk[(pk["system"] == "gem") & (pk["k"] == 1)]["pass_at_k"].iloc[0])
    to = F.tradeoff_frame(st, "inv_self_bleu", "rouge_l")
    sb = st["summary"]["self_bleu"]["gem"]
    g = to.set_index("system").loc["gem"]
    assert g["diversity"] == pytest.approx(1 - sb["mean"])
    assert g["diversity_ci_low"] == pytest.approx(1 - sb["ci_high"])


def test_judge_frame_rates():
    from score_tables import judgments

    jf = F.judge_frame(judgments()).set_index("opponent")
    assert jf.loc["baseline", ["win", "tie", "loss", "missing", "n"]].tolist() == [2, 3, 2, 1, 7]
    assert jf.loc["baseline", "tie_rate"] == pytest.approx(3 / 7)


def _write_train_logs(root: Path, systems=("baseline", "gem", "polychromic")):
    for s in systems:
        d = root / s / "plots" / "metrics" / "train"
        d.mkdir(parents=True)
        for name in ("loss", "ce", "lambda_term", "diversity", "step_time"):
            steps = np.arange(0, 50, 5)
            pd.DataFrame(
                {"timestamp": 1700000000000 + steps, "step": steps, name: 1.0 / (1 + steps)}
            ).to_csv(d / f"{name}.tsv", sep="\t", index=False)


def _run_stage(tmp_path, judge=True, train=True):
    from stages.plot import main as plot_main
    from stages.stats import main as stats_main

    (tmp_path / "params.yaml").write_text(PARAMS_YAML)
    write_scores(tmp_path / "scores")
    if judge:
        write_judgments(tmp_path / "comparisons.parquet")
    if train:
        _write_train_logs(tmp_path / "train")
    common = ["--params", str(tmp_path / "params.yaml")]
    stats_main(
        [
            "--scores-dir",
            str(tmp_path / "scores"),
            "--judge",
            str(tmp_path / "comparisons.parquet"),
            "--out",
            str(tmp_path / "stats.json"),
            "--table-md",
            str(tmp_path / "t.md"),
            "--table-tex",
            str(tmp_path / "t.tex"),
            *common,
        ]
    )
    plot_main(
        [
            "--scores-dir",
            str(tmp_path / "scores"),
            "--stats",
            str(tmp_path / "stats.json"),
            "--judge",
            str(tmp_path / "comparisons.parquet"),
            "--train-logs",
            str(tmp_path / "train"),
            "--out",
            str(tmp_path / "plots"),
            *common,
        ]
    )
    return tmp_path / "plots"


def test_stage_plot_all_figures(tmp_path):
    out = _run_stage(tmp_path)
    for name in ("pass_at_k", "tradeoff", "metric_bars", "judge", "training"):
        pdf = (out / f"{name}.pdf").read_bytes()
        assert len(pdf) > 1000 and pdf.startswith(b"%PDF"), name
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
    pk = pd.read_csv(out / "data" / "pass_at_k.csv")
    assert list(pk.columns[:3]) == ["system", "k", "pass_at_k"] and set(pk["k"]) == set(
        range(1, 11)
    )
    wide = pd.read_csv(out / "data" / "pass_at_k_wide.csv")
    assert list(wide.columns) == ["k", *SYSTEMS]
    to = pd.read_csv(out / "data" / "tradeoff.csv")
    assert {"system", "diversity", "quality"} <= set(to.columns) and len(to) == 5
    for s in SYSTEMS:
        assert list(pd.read_csv(out / "data" / "tradeoff" / f"{s}.csv").columns) == [
            "diversity",
            "quality",
        ]
    assert set(pd.read_csv(out / "data" / "metrics_long.csv")["system"]) == set(SYSTEMS)
    assert len(pd.read_csv(out / "data" / "judge.csv")) == 4
    assert len(pd.read_csv(out / "data" / "per_prompt.csv")) == 5 * 8 * len(SCORE_METRICS)
    hat = pd.read_csv(out / "data" / "pass_hat_k_wide.csv")
    assert list(hat.columns) == ["k", *SYSTEMS] and list(hat["k"]) == list(range(1, 11))


def test_stage_plot_skips_missing_optional_inputs(tmp_path, capsys):
    out = _run_stage(tmp_path, judge=False, train=False)
    msg = capsys.readouterr().out
    assert "skipped judge" in msg and "skipped training" in msg
    assert not (out / "judge.pdf").exists() and not (out / "training.pdf").exists()
    assert (out / "pass_at_k.pdf").read_bytes().startswith(b"%PDF")


def _real_train_logs(root: Path) -> None:
    """What DVCLive writes: every system logs loss, ce, step_time; polychromic also its terms."""
    for s in ("baseline", "gem", "polychromic"):
        d = root / s / "plots" / "metrics" / "train"
        d.mkdir(parents=True)
        extra = ("lambda_term", "diversity") if s == "polychromic" else ()
        for name in ("loss", "ce", "step_time", *extra):
            steps = np.arange(1, 11)
            value = 10.0 * steps if (s, name) == ("gem", "loss") else 1.0 / steps
            pd.DataFrame({"timestamp": steps, "step": steps, name: value}).to_csv(
                d / f"{name}.tsv", sep="\t", index=False
            )


def test_training_panels_one_per_curve_systems_overlaid_gem_loss_alone(tmp_path):
    _real_train_logs(tmp_path)
    panels = F.training_panels(tmp_path)
    got = [(name, [s for s, _ in curves]) for name, _, curves in panels]
    assert got == [
        ("ce", ["baseline", "gem", "polychromic"]),
        ("loss", ["baseline", "polychromic"]),  # GEM's objective is not CE: not on this axis
        ("loss", ["gem"]),
        ("lambda_term", ["polychromic"]),
        ("diversity", ["polychromic"]),
        ("step_time", ["baseline", "gem", "polychromic"]),
    ]
    fig = F.training_figure(tmp_path)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 6
    # GEM's loss (10..100 here) never stretches the axis the CE-based losses are read on.
    assert axes[1].get_ylim()[1] < 2 and axes[2].get_ylim()[1] > 50


def test_training_figure_partial_logs(tmp_path):
    _write_train_logs(tmp_path, systems=("baseline",))
    fig = F.training_figure(tmp_path)
    assert fig is not None and [ax.get_ylabel() for ax in fig.axes if ax.lines] == [
        "ce",
        "loss",
        "lambda_term",
        "diversity",
        "step_time",
    ]
    assert F.training_figure(tmp_path / "none") is None
    bad = tmp_path / "gem" / "plots" / "metrics" / "train"
    bad.mkdir(parents=True)
    (bad / "loss.tsv").write_text("timestamp\tstep\tvalue\n1\t0\t1.0\n")
    with pytest.raises(ValueError, match="loss.tsv"):
        F.training_figure(tmp_path)


def test_pass_at_k_figure_none_when_all_missing():
    st = _stats(**{f"pass_at_{k}": s for k in range(1, 11) for s in SYSTEMS[:1]})
    assert len(F.pass_at_k_figure(st).axes) == 2  # other systems still have Pass@k; and pass^k
    missing = {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    for family in ("pass_at", "pass_hat"):
        for k in range(1, 11):
            for s in SYSTEMS:
                st["summary"][f"{family}_{k}"][s] = missing
        if family == "pass_at":  # pass^k alone: its panel only
            assert [ax.get_title() for ax in F.pass_at_k_figure(st).axes] == ["Pass^k (all k pass)"]
    assert F.pass_at_k_figure(st) is None


def test_headline_is_the_table_means_and_polychromics_judge_score():
    from score_tables import judgments

    from lib.report import HEADLINE, headline

    scores = {s: score_table(s) for s in SYSTEMS}
    scores["gem"].loc[0, "rouge_l"] = float("nan")  # one prompt without a value: mean of the rest
    stats = compute_stats(scores, params_for("stats", bootstrap=50), 0, judgments())
    got = headline(stats)
    assert set(got) == set(SYSTEMS)
    for s in SYSTEMS:
        assert set(got[s]) == {*HEADLINE, *(["poly_judge_score"] if s != "polychromic" else [])}
        assert got[s]["pass_at_10"] == pytest.approx(scores[s]["pass_at_10"].mean(), abs=5e-5)
    assert got["gem"]["rouge_l"] == pytest.approx(scores["gem"]["rouge_l"][1:].mean(), abs=5e-5)
    # win + tie/2 over answered comparisons, from the raw rows' counts (judge_frame)
    frame = F.judge_frame(judgments()).set_index("opponent")
    for opp in ("zero_shot", "few_shot", "baseline", "gem"):
        jf = frame.loc[opp]
        expected = (jf["win"] + jf["tie"] / 2) / (jf["win"] + jf["tie"] + jf["loss"])
        assert got[opp]["poly_judge_score"] == pytest.approx(expected, abs=5e-5)
    assert "poly_judge_score" not in got["polychromic"]
