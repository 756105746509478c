"""RESULTS.md's training-length rule as scripts/curves_report.py applies it, on hand-made curves.

Rule: the first val step s after which neither val/ce falls nor val/reward rises by more than 1 %
over the next 100 steps, for every run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from scripts.curves_report import settled

ROOT = Path(__file__).resolve().parents[1]


def _report(tmp_path: Path, rows: list[tuple], *args: str) -> str:
    """Write `rows` (run, metric, step, value) as curves.tsv and run the report on it."""
    path = tmp_path / "curves.tsv"
    pd.DataFrame(rows, columns=["run", "metric", "step", "value"]).to_csv(
        path, sep="\t", index=False
    )
    return subprocess.run(
        [sys.executable, "scripts/curves_report.py", str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_settled_steps_by_hand():
    # CE 4.0 → 3.5 (12.5 % better, not settled) → 3.47 (0.86 % better than 3.5: settled) ...
    ce = pd.Series([4.0, 3.5, 3.5, 3.47, 3.469], index=[0, 50, 100, 150, 200])
    assert settled(ce, lower_is_better=True) == [50, 100]  # 0: 3.5 after 100 is 12.5 % better
    # A reward rising 0.10 → 0.1011 (+1.1 %) is not settled; → 0.1009 (+0.9 %) is.
    reward = pd.Series([0.10, 0.10, 0.1011, 0.1009], index=[0, 50, 100, 150])
    assert settled(reward, lower_is_better=False) == [50]


def test_a_reward_from_zero_settles_only_if_it_stays_zero():
    # qa at 135M (2026-12-01): val/reward 0.0 at step 200 (no sample of 128 matched), 0.031 at
    # 300. From 0 any rise is an unbounded relative gain (not settled); 0 → 0 gains nothing
    # (settled); a fall from 0 cannot happen for a reward but a CE of 0 → 0.1 is no gain either.
    reward = pd.Series([0.0, 0.0, 0.031, 0.0], index=[0, 100, 200, 300])
    assert settled(reward, lower_is_better=False) == [0, 200]  # 0 → 0, 0.031 → 0.0
    ce = pd.Series([0.0, 0.1], index=[0, 100])
    assert settled(ce, lower_is_better=True) == [0]


def test_chosen_step_is_the_first_that_every_curve_allows(tmp_path):
    rows = []
    for run, ce, reward in [
        ("a", [4.0, 3.6, 3.59, 3.58, 3.57], [0.1, 0.12, 0.13, 0.13, 0.13]),
        ("b", [4.0, 3.7, 3.6, 3.59, 3.59], [0.1, 0.1, 0.11, 0.11, 0.11]),
    ]:
        for i, step in enumerate(range(0, 500, 100)):
            rows.append((run, "val/ce", step, ce[i]))
            rows.append((run, "val/reward", step, reward[i]))
    out = _report(tmp_path, rows)
    # a/ce settles at 100 (3.6 → 3.59), b/ce at 200; a/reward at 200 (0.13 → 0.13), b/reward at 100.
    assert "chosen training length: 200" in out
    assert (tmp_path / "val_curves.png").stat().st_size > 0


def test_no_settled_step_says_so_and_still_draws_into_a_new_folder(tmp_path):
    # qa on the H200 (2026-12-01): val CE still fell 1.5 % over the last 100 steps, so no step
    # settles; the report must say where the curves end, and --out may name a folder not made yet
    # (it crashed on savefig there).
    rows = []
    for step, ce in zip(range(25, 300, 25), [2.36, 2.21, 2.17, 2.12, 2.08, 2.07, 2.06, 2.05,
                                            2.04, 2.035, 2.03], strict=True):  # fmt: skip
        rows += [("a", "val/ce", step, ce), ("a", "val/reward", step, 0.02)]
    out_dir = tmp_path / "new" / "report"
    out = _report(tmp_path, rows, "--out", str(out_dir))
    # 175 → 275: 2.06 → 2.03 is 1.46 % better, so 175 does not settle; nor does any step before.
    assert "chosen training length: none (no step settles; the curves end at step 275" in out
    assert (out_dir / "val_curves.pdf").stat().st_size > 0
