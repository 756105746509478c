"""scripts/summary.py: the cross-domain table of RESULTS.md, from hand-made run folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import summary  # noqa: E402


def _run(tmp_path: Path, name: str, with_generations: bool = True) -> Path:
    run = tmp_path / name
    (run / "metrics").mkdir(parents=True)
    stats = {
        "n_prompts": {"baseline": 3, "polychromic": 3, "zero_shot": 3},
        "summary": {
            "pass_at_10": {"baseline": {"mean": 0.5}, "polychromic": {"mean": 2 / 3}},
            # effective diversity could not be computed for baseline: null, not 0
            "effective_diversity": {"baseline": {"mean": None}, "polychromic": {"mean": 0.25}},
        },
    }
    (run / "metrics/stats.json").write_text(json.dumps(stats))
    (run / "metrics/stage_times.tsv").write_text(
        "stage\tseconds\ntrain_baseline\t61.3\ntrain_polychromic\t181.4\n"
        "generate@baseline\t28.0\ngenerate@polychromic\t26.1\ngenerate@zero_shot\t29.4\n"
    )
    if with_generations:
        (run / "data/generations").mkdir(parents=True)
        # 2 samples of 3 + 4 tokens: 7 tokens for polychromic; none written for baseline.
        pd.DataFrame({"n_tokens": [3, 4], "output": ["a b c", "d e f g"]}).to_parquet(
            run / "data/generations/polychromic.parquet"
        )
    return run


def _row(text: str, domain: str, system: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [domain, system]:
            return cells
    raise AssertionError(f"no row {domain} / {system} in\n{text}")


def test_summary_rows_carry_means_compute_and_dashes_for_what_is_missing(tmp_path, capsys):
    run = _run(tmp_path, "social")
    summary.main(["--run", f"social={run}"])
    text = capsys.readouterr().out
    head = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    col = {name: i for i, name in enumerate(head)}
    poly = _row(text, "social", "Polychromic")
    assert poly[col["Pass@10 ↑"]] == "0.667"  # 2/3 to 3 decimals
    assert poly[col["Effective diversity ↑"]] == "0.250"
    assert poly[col["Train s"]] == "181" and poly[col["Generate s"]] == "26"
    assert poly[col["Tokens generated"]] == "7"  # 3 + 4
    base = _row(text, "social", "Baseline LoRA")
    assert base[col["Effective diversity ↑"]] == "–"  # null in stats: missing, never 0
    assert base[col["Pass^5 ↑"]] == "–"  # absent from stats altogether
    assert base[col["Tokens generated"]] == "–"  # no generations file
    zero = _row(text, "social", "Zero-shot")
    assert zero[col["Train s"]] == "–" and zero[col["Generate s"]] == "29"  # nothing to train
    assert zero[col["n"]] == "3"


def test_summary_stacks_domains_in_the_order_given(tmp_path, capsys):
    a, b = _run(tmp_path, "a"), _run(tmp_path, "b", with_generations=False)
    summary.main(["--run", f"qa={a}", "--run", f"code={b}"])
    domains = [ln.split("|")[1].strip() for ln in capsys.readouterr().out.splitlines()[2:]]
    assert domains == ["qa"] * 5 + ["code"] * 5


def test_summary_names_a_bad_run(tmp_path):
    with pytest.raises(SystemExit, match="DOMAIN=FOLDER, not 'social'"):
        summary.main(["--run", "social"])
    with pytest.raises(SystemExit, match="has no stats.json"):
        summary.main(["--run", f"social={tmp_path}"])


def test_summary_averages_the_seeds_of_a_domain_and_leaves_partial_figures_missing(
    tmp_path, capsys
):
    a, b = _run(tmp_path, "s0"), _run(tmp_path, "s1")
    stats = json.loads((b / "metrics/stats.json").read_text())
    stats["summary"]["pass_at_10"]["polychromic"]["mean"] = 0.5  # seed 0: 2/3, seed 1: 1/2
    stats["summary"]["effective_diversity"]["polychromic"]["mean"] = None  # seed 1 lacks it
    (b / "metrics/stats.json").write_text(json.dumps(stats))
    (b / "metrics/stage_times.tsv").write_text("stage\tseconds\ntrain_polychromic\t200.6\n")
    summary.main(["--run", f"social={a},{b}"])
    text = capsys.readouterr().out
    head = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    col = {name: i for i, name in enumerate(head)}
    poly = _row(text, "social", "Polychromic")
    assert poly[col["Seeds"]] == "2"
    assert poly[col["Pass@10 ↑"]] == "0.583"  # (2/3 + 1/2) / 2 = 7/12
    assert poly[col["Effective diversity ↑"]] == "–"  # one seed lacks it: not the other's 0.25
    assert poly[col["Train s"]] == "191"  # (181.4 + 200.6) / 2
    assert poly[col["Generate s"]] == "–"  # seed 1 has no generate time
    assert poly[col["Tokens generated"]] == "7"  # 7 in each seed


def test_summary_refuses_seeds_evaluated_on_different_n(tmp_path):
    a, b = _run(tmp_path, "s0"), _run(tmp_path, "s1")
    stats = json.loads((b / "metrics/stats.json").read_text())
    stats["n_prompts"]["baseline"] = 4
    (b / "metrics/stats.json").write_text(json.dumps(stats))
    with pytest.raises(SystemExit, match=r"evaluate baseline on different n: \{3, 4\}"):
        summary.main(["--run", f"social={a},{b}"])
