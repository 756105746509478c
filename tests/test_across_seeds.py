"""Headline metrics across training seeds (lib.across_seeds, scripts/seeds.py), hand-derived."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lib.across_seeds import across_seeds, to_markdown
from lib.experiments import stale_stages
from scripts import seeds as seeds_script

ROOT = Path(__file__).resolve().parents[1]

# Pass@10 at three seeds: baseline 0.90, 0.80, 0.85; polychromic 1.00, 0.80, 0.90.
#   polychromic: mean 0.9, sd √((0.1² + 0.1² + 0²)/2) = 0.1
#   paired d = [0.10, 0.00, 0.05]: mean 0.05, sd √((0.05² + 0.05² + 0²)/2) = 0.05
#   unpaired, the difference of the means is the same 0.05, but its spread would mix the seeds.
RUNS = {
    "s0": {"baseline": {"pass_at_10": 0.90}, "polychromic": {"pass_at_10": 1.00}},
    "s1": {"baseline": {"pass_at_10": 0.80}, "polychromic": {"pass_at_10": 0.80}},
    "s2": {"baseline": {"pass_at_10": 0.85}, "polychromic": {"pass_at_10": 0.90}},
}


def _row(df, row, metric="pass_at_10"):
    return df[(df["row"] == row) & (df["metric"] == metric)].iloc[0]


def test_mean_sd_and_the_difference_paired_by_seed():
    df = across_seeds(RUNS, ["pass_at_10"], ["baseline", "polychromic"])
    poly = _row(df, "polychromic")
    assert (poly["n"], poly["mean"], poly["sd"]) == (3, pytest.approx(0.9), pytest.approx(0.1))
    d = _row(df, "polychromic − baseline")
    assert d["mean"] == pytest.approx(0.05) and d["sd"] == pytest.approx(0.05)
    assert [d["s0"], d["s1"], d["s2"]] == pytest.approx([0.10, 0.0, 0.05])


def test_a_missing_value_is_left_out_never_zero():
    runs = {**RUNS, "s2": {"baseline": {"pass_at_10": 0.85}, "polychromic": {"pass_at_10": None}}}
    df = across_seeds(runs, ["pass_at_10"], ["baseline", "polychromic"])
    poly = _row(df, "polychromic")
    assert poly["n"] == 2 and poly["mean"] == pytest.approx(0.9) and math.isnan(poly["s2"])
    assert _row(df, "polychromic − baseline")["n"] == 2  # s2 has no pair
    md = to_markdown(df, {"polychromic": "Polychromic"}, {"pass_at_10": "Pass@10 ↑"})
    assert "| Polychromic | 0.900 ± 0.141 (2) |" in md  # sd of [1.0, 0.8]; (2) of 3 runs


def test_one_seed_has_no_sd():
    df = across_seeds({"s0": RUNS["s0"]}, ["pass_at_10"], ["baseline", "polychromic"])
    assert math.isnan(_row(df, "baseline")["sd"])
    md = to_markdown(df, {}, {})
    assert (
        "| baseline | 0.900 |" in md
        and "| polychromic − baseline (paired by seed) | +0.100 |" in md
    )


def test_seeds_script_fails_naming_an_experiment_without_stats():
    head = "metrics/headline/baseline.json"
    shown = [
        {
            "rev": "b",
            "name": "main",
            "data": {},
            "experiments": [
                {
                    "revs": [
                        {
                            "rev": "c1",
                            "name": "s0",
                            "data": {"metrics": {head: {"data": {"pass_at_10": 0.9}}}},
                        }
                    ]
                },
                {"revs": [{"rev": "c2", "name": "s1", "data": {"metrics": {}}}]},
            ],
        }
    ]
    assert seeds_script.headlines(shown, ["s0"])["s0"]["baseline"] == {"pass_at_10": 0.9}
    with pytest.raises(SystemExit, match=r"no headline metrics for \['s1'\]"):
        seeds_script.headlines(shown, ["s0", "s1"])


def _lock(**stages):
    return {"schema": "2.0", "stages": stages}


def test_stale_stages_names_a_dep_another_stage_wrote_differently():
    # score wrote scores (md5 s2); stats still lists the scores it read before (s1): stale.
    # Deps nobody in the lock produces (source files) never count.
    lock = _lock(
        score={
            "deps": [{"path": "gen.parquet", "md5": "g1"}],
            "outs": [{"path": "scores.parquet", "md5": "s2"}],
        },
        generate={
            "deps": [{"path": "lib/x.py", "md5": "x"}],
            "outs": [{"path": "gen.parquet", "md5": "g1"}],
        },
        stats={
            "deps": [{"path": "scores.parquet", "md5": "s1"}, {"path": "lib/y.py", "md5": "y"}],
            "outs": [{"path": "stats.json", "md5": "t"}],
        },
    )
    assert stale_stages(lock) == {"stats": ["scores.parquet"]}
    lock["stages"]["stats"]["deps"][0]["md5"] = "s2"
    assert stale_stages(lock) == {}


def test_a_system_named_with_a_dash_is_still_a_system_row():
    # The difference row was once found by "−" in its name: a system called "gem−v2" then printed
    # as a signed difference "(paired by seed)". The frame now says which row is a difference.
    runs = {r: {"gem−v2": v["baseline"], "polychromic": v["polychromic"]} for r, v in RUNS.items()}
    df = across_seeds(runs, ["pass_at_10"], ["gem−v2", "polychromic"], reference="gem−v2")
    md = to_markdown(df, {}, {})
    assert "| gem−v2 | 0.850 ± 0.050 |" in md  # (0.90 + 0.80 + 0.85) / 3, sd 0.05, unsigned
    assert "| polychromic − gem−v2 (paired by seed) | +0.050 ± 0.050 |" in md


@pytest.mark.parametrize("domain", ["code_test", "qa_test", "social_test"])
def test_kept_seed_tables_regenerate_from_the_kept_runs(domain, tmp_path):
    # RESULTS.md's per-domain seed tables were made from the experiments (`--exp`), whose refs do
    # not outlive a workplace; the kept folders must give the same table, or the table quotes
    # numbers no kept run holds (a seed's folder swapped, a headline file edited).
    folder = ROOT / "reports" / domain
    runs = sorted(folder.glob("seed[0-9]"))
    seeds_script.main([a for r in runs for a in ("--run", str(r))] + ["--out", str(tmp_path / "s")])
    assert (tmp_path / "s.md").read_text() == (folder / "seeds.md").read_text()
    # The CSV's per-seed columns are named by the source (experiment or folder); the rows match.
    got = (tmp_path / "s.csv").read_text().splitlines()
    want = (folder / "seeds.csv").read_text().splitlines()
    assert got[0].split(",")[:6] == want[0].split(",")[:6] and got[1:] == want[1:]


def test_a_kept_run_without_a_systems_headline_is_named(tmp_path):
    run = tmp_path / "seed0" / "metrics" / "headline"
    run.mkdir(parents=True)
    for s in ("zero_shot", "few_shot", "baseline", "gem"):  # polychromic's file is missing
        (run / f"{s}.json").write_text('{"pass_at_10": 0.5}')
    with pytest.raises(SystemExit, match=r"seed0: no headline metrics \[.*polychromic\.json'\]"):
        seeds_script.main(["--run", str(tmp_path / "seed0"), "--out", str(tmp_path / "s")])
    assert not (tmp_path / "s.md").exists()
