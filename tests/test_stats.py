"""lib.stats (tests, CIs, Holm), lib.report (the paper table) and the stats stage."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from score_tables import PARAMS_YAML, judgments, score_table, write_judgments, write_scores

from lib.config import params_for
from lib.power import detectable_d, min_detectable_effect
from lib.report import to_latex, to_markdown
from lib.schemas import METRIC, METRICS, SCORE_METRICS, SYSTEMS
from lib.stats import (
    bootstrap_ci,
    cohens_d,
    compare_one,
    compute_stats,
    effective_diversity_coverage,
    holm,
    judge_summary,
    paired_d,
    rank_biserial,
    ratio_bootstrap_ci,
)

P = params_for("stats", bootstrap=300, alpha=0.05)


def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # NaN is not part of the family: the other two are adjusted as a family of two.
    out = holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_cohens_d_pooled_sd_exact():
    a, b = [1.0, 2, 3, 4], [2.0, 4, 6, 8]
    pooled = math.sqrt((3 * (5 / 3) + 3 * (20 / 3)) / 6)
    assert cohens_d(a, b) == pytest.approx((2.5 - 5.0) / pooled)
    assert cohens_d(a, b) == pytest.approx(-1.224744871391589)
    assert math.isnan(cohens_d([1.0, 1.0], [1.0, 1.0]))  # SD 0: undefined, not 0
    assert math.isnan(cohens_d([1.0], [2.0, 3.0]))


def test_paired_effect_sizes_exact():
    assert paired_d([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2 / SD 1
    assert math.isnan(paired_d([2.0, 2.0, 2.0]))
    # |d| ranks of [1, -2, 3] are 1, 2, 3: R+ = 4, R- = 2 → (4 - 2) / 6; the zero is dropped.
    assert rank_biserial([1.0, -2.0, 3.0, 0.0]) == pytest.approx(1 / 3)
    assert rank_biserial([1.0, 2.0]) == 1.0
    assert math.isnan(rank_biserial([0.0, 0.0]))


def test_compare_one_matches_scipy_and_drops_nan_pairs():
    ids = [f"q{i}" for i in range(7)]
    t = pd.Series([0.9, 0.8, 0.75, 0.6, np.nan, 0.95, 0.7], index=ids)
    o = pd.Series([0.5, 0.55, 0.8, 0.3, 0.4, 0.6, np.nan], index=ids)
    r = compare_one(t, o, P, 0, "m", "o")
    tt = np.array([0.9, 0.8, 0.75, 0.6, 0.95])
    oo = np.array([0.5, 0.55, 0.8, 0.3, 0.6])
    assert (r["n_pairs"], r["n_dropped"]) == (5, 2)
    assert r["p_wilcoxon"] == pytest.approx(sps.wilcoxon(tt, oo).pvalue)
    assert r["p_mannwhitney"] == pytest.approx(
        sps.mannwhitneyu(tt, oo, alternative="two-sided").pvalue
    )
    assert r["diff"] == pytest.approx((tt - oo).mean())
    assert r["cohens_d"] == pytest.approx(cohens_d(tt, oo))
    assert r["d_paired"] == pytest.approx(paired_d(tt - oo))
    assert r["ci_low"] <= r["diff"] <= r["ci_high"]
    # Pairing is by id, not by position.
    r2 = compare_one(t, o.iloc[::-1], P, 0, "m", "o")
    assert r2["p_wilcoxon"] == r["p_wilcoxon"] and r2["diff"] == r["diff"]


def test_min_detectable_effect_matches_independent_computations():
    """MDE = d*·SD(diff): d* the standardized effect at which a two-sided paired t-test at alpha
    rejects with probability `power`. Checked against three computations that share no steps."""
    from statsmodels.stats.power import TTestPower

    # 20 differences alternating ±1: mean 0, SD (ddof 1) = √(20/19)
    diffs = np.array([1.0, -1.0] * 10)
    sd = math.sqrt(20 / 19)
    # (1) statsmodels' solver, where it converges (n = 20, alpha 0.05, power 0.8): d* = 0.6604
    d_sm = TTestPower().solve_power(nobs=20, alpha=0.05, power=0.8, alternative="two-sided")
    assert d_sm == pytest.approx(0.6604, abs=1e-4)
    assert min_detectable_effect(diffs, 0.05, 0.8) == pytest.approx(d_sm * sd, rel=1e-6)
    # (2) the normal approximation (z_0.975 + z_0.8)·SD/√n = 2.8016·SD/√n: the t-test needs a
    #     little more at n = 2000 (0.05 %), 12 % more at n = 10 (t_9 has heavier tails)
    z = sps.norm.isf(0.025) + sps.norm.ppf(0.8)
    assert z == pytest.approx(2.8016, abs=1e-4)
    big = min_detectable_effect(np.tile([1.0, -1.0], 1000), 0.05, 0.8)
    normal = z * math.sqrt(2000 / 1999) / math.sqrt(2000)
    assert normal < big < normal * 1.001
    small = min_detectable_effect(diffs[:10], 0.05, 0.8)
    assert small > 1.1 * z * math.sqrt(10 / 9) / math.sqrt(10)
    # (3) the definition, simulated: differences N(d*, 1) on n = 10 prompts at the Bonferroni
    #     alpha 0.05/124; the t-test rejects 80 % of 40,000 draws (SE 0.2 %). statsmodels'
    #     solve_power answers d = 1.85 here, without a warning, whose power is 0.64.
    n, alpha = 10, 0.05 / 124
    d = detectable_d(n, alpha, 0.8)
    x = np.random.default_rng(0).normal(d, 1.0, size=(40_000, n))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    assert (np.abs(t) > sps.t.isf(alpha / 2, n - 1)).mean() == pytest.approx(0.8, abs=0.01)


def test_min_detectable_effect_is_missing_not_zero_without_a_variance():
    assert math.isnan(min_detectable_effect([0.3], 0.05, 0.8))  # n = 1: no SD
    # every difference equal: no variance estimate, undefined (its float SD is 3e-17, not 0)
    assert math.isnan(min_detectable_effect([0.2, 0.2, 0.2], 0.05, 0.8))
    with pytest.raises(ValueError, match=r"need 0 < alpha < power < 1, got 0.8, 0.8"):
        min_detectable_effect([1.0, 2.0], 0.8, 0.8)


def test_comparisons_report_the_mde_at_alpha_and_at_the_bonferroni_alpha():
    scores = {s: score_table(s) for s in SYSTEMS}
    st = compute_stats(scores, P, 0)
    family = st["settings"]["holm_family_size"]
    assert st["settings"]["power"] == P.power == 0.8  # params.yaml's stats.power
    t = scores["polychromic"].set_index("id")["pass_at_10"]
    for opp in ("zero_shot", "gem"):
        c = st["comparisons"][opp]["pass_at_10"]
        diffs = (t - scores[opp].set_index("id")["pass_at_10"]).to_numpy()
        assert c["sd_diff"] == pytest.approx(diffs.std(ddof=1))
        assert c["mde"] == pytest.approx(min_detectable_effect(diffs, 0.05, 0.8))
        assert c["mde_bonferroni"] == pytest.approx(
            min_detectable_effect(diffs, 0.05 / family, 0.8)
        )
        assert c["mde_bonferroni"] > c["mde"] > 0
    # a system identical to polychromic: every difference 0, no SD, so no MDE (null, never 0)
    scores["gem"] = scores["polychromic"].assign(system="gem")
    c = compute_stats(scores, P, 0)["comparisons"]["gem"]["pass_at_10"]
    assert c["mde"] is None and c["mde_bonferroni"] is None and c["sd_diff"] == 0.0


def test_effective_diversity_coverage_is_defined_of_all_prompts():
    # 4 prompts: c = 3 and c = 5 have a value; c = 1 has none (no passing pair); one has no checker
    df = pd.DataFrame(
        {
            "n_pass": pd.array([3, 1, None, 5], dtype="Int64"),
            "effective_diversity": [0.4, np.nan, np.nan, 0.2],
        }
    )
    assert effective_diversity_coverage(df) == {
        "defined": 2,
        "checked": 3,
        "prompts": 4,
        "fraction": 0.5,  # 2 of 4 prompts, not 2 of the 3 checked
    }
    no_checker = df.assign(n_pass=pd.array([None] * 4, dtype="Int64"), effective_diversity=np.nan)
    assert effective_diversity_coverage(no_checker)["fraction"] is None  # n/a, not 0 coverage
    st = compute_stats({s: score_table(s) for s in SYSTEMS}, P, 0)
    assert st["effective_diversity_coverage"]["gem"] == {
        "defined": 8,
        "checked": 8,
        "prompts": 8,
        "fraction": 1.0,
    }


def test_pass_hat_k_and_effective_diversity_are_compared_like_pass_at_k():
    scores = {s: score_table(s) for s in SYSTEMS}
    st = compute_stats(scores, P, 0)
    for m in ("pass_hat_5", "pass_hat_10", "effective_diversity"):
        c = st["comparisons"]["baseline"][m]
        assert c["n_pairs"] == 8 and c["p_holm"] is not None and c["mde"] is not None
        t = scores["polychromic"][m].to_numpy()
        assert c["p_wilcoxon"] == pytest.approx(sps.wilcoxon(t, scores["baseline"][m]).pvalue)
        assert st["summary"][m]["gem"]["mean"] == pytest.approx(scores["gem"][m].mean())


def test_metric_labels_and_directions_have_one_home():
    from lib import figures as F
    from lib.report.rows import TABLE_METRICS, metric_row

    assert [m.name for m in METRICS] == list(SCORE_METRICS)
    for m in METRICS:
        assert F.METRIC_LABELS[m.name] == m.display
    for name in TABLE_METRICS:
        row = metric_row(name)
        assert (row.label, row.higher_is_better) == (
            METRIC[name].display,
            METRIC[name].higher_is_better,
        )
    assert (
        METRIC["pass_hat_5"].display == "Pass^5 ↑" and METRIC["self_bleu"].display == "Self-BLEU ↓"
    )


def test_bootstrap_ci_percentile_definition_and_seeding():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    lo, hi = bootstrap_ci(x, 500, 0.1, np.random.default_rng(3))
    idx = np.random.default_rng(3).integers(0, 4, size=(500, 4))
    means = x[idx].mean(axis=1)
    assert (lo, hi) == (np.quantile(means, 0.05), np.quantile(means, 0.95))
    assert bootstrap_ci([0.5] * 5, 100, 0.05, np.random.default_rng(0)) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([], 100, 0.05, np.random.default_rng(0))
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, np.nan], 100, 0.05, np.random.default_rng(0))


def test_ratio_bootstrap_ci_resamples_clusters():
    wins, n = np.array([3.0, 0.0, 1.0]), np.array([4.0, 2.0, 2.0])
    lo, hi = ratio_bootstrap_ci(wins, n, 400, 0.1, np.random.default_rng(5))
    idx = np.random.default_rng(5).integers(0, 3, size=(400, 3))
    r = wins[idx].sum(1) / n[idx].sum(1)
    assert (lo, hi) == (np.quantile(r, 0.05), np.quantile(r, 0.95))
    assert lo <= 4 / 8 <= hi
    with pytest.raises(ValueError):
        ratio_bootstrap_ci(wins, np.array([1.0, 0.0, 1.0]), 10, 0.1, np.random.default_rng(0))


def test_bootstrap_ci_coverage_near_nominal():
    rng = np.random.default_rng(12345)
    true_mean, hits, sims = 0.3, 0, 200
    for _ in range(sims):
        x = rng.normal(true_mean, 0.2, size=40)
        lo, hi = bootstrap_ci(x, 1000, 0.05, rng)
        hits += lo <= true_mean <= hi
    assert 0.90 <= hits / sims <= 0.99


def test_missing_metric_stays_missing():
    scores = {s: score_table(s) for s in SYSTEMS}
    scores["gem"]["pass_at_1"] = np.nan  # e.g. no checker
    st = compute_stats(scores, P, 0)
    assert st["summary"]["pass_at_1"]["gem"] == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "n": 0,
    }
    c = st["comparisons"]["gem"]["pass_at_1"]
    assert c["n_pairs"] == 0 and c["n_dropped"] == 8
    assert c["diff"] is None and c["p_wilcoxon"] is None and c["p_holm"] is None
    # semantic_diversity_train is all-NaN for every system: null everywhere, never 0.
    assert all(v["mean"] is None for v in st["summary"]["semantic_diversity_train"].values())
    assert "null" in json.dumps(st["summary"]["semantic_diversity_train"])


def test_holm_is_over_the_whole_family():
    scores = {s: score_table(s) for s in SYSTEMS}
    st = compute_stats(scores, P, 0)
    cells = [(o, m) for o in st["comparisons"] for m in SCORE_METRICS]
    raw = [st["comparisons"][o][m]["p_wilcoxon"] for o, m in cells]
    finite = [p for p in raw if p is not None]
    assert st["settings"]["holm_family_size"] == len(finite) == 4 * (len(SCORE_METRICS) - 1)
    from statsmodels.stats.multitest import multipletests

    want = multipletests(finite, method="holm")[1]
    got = [
        st["comparisons"][o][m]["p_holm"] for o, m in cells if raw[cells.index((o, m))] is not None
    ]
    assert got == pytest.approx(list(want))


def test_stats_deterministic_for_seed():
    scores = {s: score_table(s) for s in SYSTEMS}
    a, b = compute_stats(scores, P, 1), compute_stats(scores, P, 1)
    assert a == b
    c = compute_stats(scores, P, 2)
    assert c["summary"]["rouge_l"]["gem"]["ci_low"] != a["summary"]["rouge_l"]["gem"]["ci_low"]


def test_judge_summary_counts_and_rates():
    j = judge_summary(judgments(), P, 0)
    b = j["opponents"]["baseline"]  # w t l t l w t m
    assert (b["win"], b["tie"], b["loss"], b["missing"], b["n"]) == (2, 3, 2, 1, 7)
    assert b["win_rate"] == pytest.approx(2 / 7) and b["loss_rate"] == pytest.approx(2 / 7)
    assert b["p_sign"] == pytest.approx(sps.binomtest(2, 4, 0.5).pvalue)
    assert b["ci_low"] <= b["win_rate"] <= b["ci_high"]
    z = j["opponents"]["zero_shot"]  # 7 wins, 1 tie
    assert z["win_rate"] == pytest.approx(7 / 8)
    assert j["backend"] == ["local"]
    assert judge_summary(None, P, 0) is None


def _table_stats(n_ids=20, with_judge=True):
    scores = {s: score_table(s, n_ids) for s in SYSTEMS}
    return compute_stats(scores, P, 0, judgments() if with_judge else None)


def test_table_bold_and_dagger_markdown():
    st = _table_stats()
    md = to_markdown(st)
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("|")
    }
    header = rows["Metric"].split(" | ")
    assert header[1:] == ["Zero-shot", "Few-shot", "Baseline LoRA", "GEM", "Polychromic |"]
    cells = [c.strip() for c in rows["Self-BLEU ↓"].strip("| ").split(" | ")][1:]
    # Polychromic has the lowest Self-BLEU: bold, no dagger on its own column.
    assert cells[4].startswith("**0.") and cells[4].endswith("**")
    assert all("**" not in c for c in cells[:4])
    # Every other system differs on all 20 prompts in the same direction: Holm p < 0.05.
    assert all(c.endswith(" †") for c in cells[:4])
    rouge = [c.strip() for c in rows["ROUGE-L ↑"].strip("| ").split(" | ")][1:]
    assert rouge[2].startswith("**")  # baseline best on ROUGE-L
    assert "±" in rouge[0]
    judge = rows["Judge score, W/T/L (Poly. vs column)"]
    judge = [c.strip() for c in judge.strip("| ").split(" | ")][1:]
    assert judge[4] == "—"
    # zero_shot: 7 wins, 1 tie, 0 losses -> (7 + 1/2) / 8 = 0.9375
    assert judge[0].startswith("0.938 ±") and judge[0].endswith("(7/1/0)")
    assert "**local**" in md


def _md_rows(md: str) -> dict[str, list[str]]:
    out = {}
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("| ").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


def test_table_shows_pass_hat_k_effective_diversity_coverage_and_mde():
    scores = {s: score_table(s, 20) for s in SYSTEMS}
    scores["zero_shot"]["n_pass"] = pd.NA  # no checker: coverage n/a
    scores["zero_shot"]["effective_diversity"] = np.nan
    scores["gem"].loc[:9, "effective_diversity"] = np.nan  # 10 of 20 prompts without a pair
    st = compute_stats(scores, P, 0, judgments())
    md = to_markdown(st)
    rows = _md_rows(md)
    for label in ("Pass^5 ↑", "Pass^10 ↑", "Effective diversity ↑"):
        assert label in rows, label
    cov = rows["Effective-diversity coverage"]
    assert cov[0] == "n/a" and cov[3] == "0.500 (10/20)" and cov[4] == "1.000 (20/20)"
    mde = rows["Min. detectable Pass@10 diff. (Poly. vs column)"]
    for i, s in enumerate(SYSTEMS[:4]):
        c = st["comparisons"][s]["pass_at_10"]
        assert mde[i] == f"{c['mde']:.3f} ({c['mde_bonferroni']:.3f})"
    assert mde[4] == "—"
    family = st["settings"]["holm_family_size"]
    assert "two-sided paired t-test at alpha = 0.05 finds with power 0.8" in md
    assert (
        f"n = 20 paired prompts (noncentral t); in parentheses the same at alpha / {family}" in md
    )
    tex = to_latex(st)
    assert r"Pass$^{5}$ $\uparrow$ & " in tex
    assert "^" not in re.sub(r"\$[^$]*\$", "", tex)  # a text-mode ^ does not compile


def test_table_latex_booktabs():
    st = _table_stats()
    tex = to_latex(st)
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lccccc}"):
        assert token in tex
    line = next(ln for ln in tex.splitlines() if ln.startswith("Self-BLEU"))
    cells = line.removesuffix(r" \\").split(" & ")
    assert cells[5].startswith(r"\textbf{0.") and r"$\pm$" in cells[5]
    assert all(c.endswith(r"$^\dagger$") for c in cells[1:5])
    judge = next(ln for ln in tex.splitlines() if ln.startswith("Judge"))
    assert judge.removesuffix(r" \\").split(" & ")[5] == "---"
    assert "local" in tex and "%" not in tex.replace(r"\%", "").split("\n", 1)[1]


def test_table_without_judge_and_interval_format():
    st = _table_stats(with_judge=False)
    md = to_markdown(st, ci_format="interval")
    judge = next(ln for ln in md.splitlines() if ln.startswith("| Judge"))
    assert judge.count("n/a") == 4 and "—" in judge
    assert "[0." in next(ln for ln in md.splitlines() if ln.startswith("| ROUGE-L"))
    assert "no judge comparisons" in md


def _write_params(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS_YAML)
    return str(tmp_path / "params.yaml")


def test_stage_stats_end_to_end(tmp_path):
    from stages.stats import main

    write_scores(tmp_path / "scores")
    write_judgments(tmp_path / "judge" / "comparisons.parquet")
    out = tmp_path / "metrics"
    main(
        [
            "--scores-dir", str(tmp_path / "scores"),
            "--judge", str(tmp_path / "judge" / "comparisons.parquet"),
            "--out", str(out / "stats.json"),
            "--table-md", str(out / "table.md"),
            "--table-tex", str(out / "table.tex"),
            "--params", _write_params(tmp_path),
        ]
    )  # fmt: skip
    st = json.loads((out / "stats.json").read_text())
    assert st["settings"]["bootstrap"] == 300 and st["settings"]["seed"] == 7
    assert st["summary"]["semantic_diversity_train"]["gem"]["mean"] is None
    assert set(st["comparisons"]) == {"zero_shot", "few_shot", "baseline", "gem"}
    assert st["judge"]["opponents"]["gem"]["n"] == 4
    assert "| Pass@10 ↑ |" in (out / "table.md").read_text()
    assert r"\bottomrule" in (out / "table.tex").read_text()


def test_stage_stats_missing_judge_ok_missing_system_fails(tmp_path):
    from stages.stats import main

    write_scores(tmp_path / "scores")
    args = [
        "--scores-dir", str(tmp_path / "scores"),
        "--judge", str(tmp_path / "nope.parquet"),
        "--out", str(tmp_path / "s.json"),
        "--table-md", str(tmp_path / "t.md"),
        "--table-tex", str(tmp_path / "t.tex"),
        "--params", _write_params(tmp_path),
    ]  # fmt: skip
    main(args)
    assert json.loads((tmp_path / "s.json").read_text())["judge"] is None
    assert "n/a" in (tmp_path / "t.md").read_text()
    (tmp_path / "scores" / "gem.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="gem.parquet"):
        main(args)
