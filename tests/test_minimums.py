"""Too little data is an error, not a quiet success (issue 17 item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from score_tables import score_table

from lib.config import ParamsError, merged_params, params_for
from lib.data import DataError
from lib.io import write_parquet
from lib.report import to_markdown
from lib.schemas import PAIRS, SYSTEMS
from lib.split import check_sizes, split_pairs
from lib.stats import compute_stats

ROOT = Path(__file__).resolve().parents[1]


def _pairs(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "domain": "qa",
            "input": [f"input {i}" for i in range(n)],
            "reference": [f"ref {i}" for i in range(n)],
            "group": [f"g{i}" for i in range(n)],
            "meta": "{}",
        }
    )


def test_three_pairs_split_one_each_is_an_error():
    # The reported case: 3 pairs split 1/1/1 and the stage exited 0.
    p = params_for("split", min_test=2)
    parts = split_pairs(_pairs(3), p, 0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    with pytest.raises(DataError, match=r"test has 1 distinct inputs, fewer than split.min_test=2"):
        check_sizes(parts, p)


def test_empty_split_is_an_error_even_above_min_test():
    p = params_for("split", train=0.5, val=0.0, test=0.5, min_test=1)
    parts = split_pairs(_pairs(40), p, 0)
    assert len(parts["val"]) == 0 and len(parts["test"]) >= 1
    with pytest.raises(DataError, match=r"split 'val' is empty"):
        check_sizes(parts, p)


def test_allow_small_turns_the_error_into_a_warning():
    p = params_for("split", min_test=2, allow_small=True)
    parts = split_pairs(_pairs(3), p, 0)
    assert check_sizes(parts, p) == ["test has 1 distinct inputs, fewer than split.min_test=2"]


def test_enough_data_passes_silently():
    p = params_for("split", min_test=5)
    assert check_sizes(split_pairs(_pairs(100), p, 0), p) == []


def test_max_pairs_zero_is_a_params_error_not_a_schema_crash():
    # Was: "column 'id' has type double, expected string" from the writer.
    with pytest.raises(ParamsError, match=r"data.max_pairs = 0: accepted: x >= 1"):
        params_for("data", max_pairs=0)


def test_split_stage_on_tiny_data_exits_1_in_one_line(tmp_path):
    write_parquet(_pairs(3), tmp_path / "pairs.parquet", PAIRS)
    params = merged_params({"split": {"min_test": 2}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run(
        [sys.executable, "-m", "stages.split", "--pairs", "pairs.parquet", "--out", "split",
         "--report", "split.json"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("split: error: too little data: test has 1 distinct inputs")
    assert not (tmp_path / "split").exists() and not (tmp_path / "split.json").exists()


def test_table_marks_a_system_scored_on_fewer_prompts_and_never_bolds_it():
    # GEM scored on 5 prompts, the others on 8; GEM's ROUGE-L is made the highest.
    scores = {s: score_table(s, n_ids=5 if s == "gem" else 8) for s in SYSTEMS}
    scores["gem"]["rouge_l"] = 0.99
    stats = compute_stats(scores, params_for("stats", bootstrap=50), 0)
    md = to_markdown(stats)
    header = next(line for line in md.splitlines() if line.startswith("| Metric"))
    assert "| GEM ‡ |" in header and "Baseline LoRA ‡" not in header
    rouge = next(line for line in md.splitlines() if line.startswith("| ROUGE-L"))
    cells = [c.strip() for c in rouge.strip("|").split("|")][1:]
    gem = cells[SYSTEMS.index("gem")]
    assert gem.startswith("0.990") and "**" not in gem
    assert sum("**" in c for c in cells) == 1  # the best of the fully scored systems
    assert "‡ Scored on fewer prompts than the others (GEM: 5 of 8)" in md
