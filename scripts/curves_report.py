"""Apply RESULTS.md's training-length rule to the val curves of scripts/gpu_curves.sh.

    python scripts/curves_report.py reports/social_curves/curves.tsv [--out reports/social_curves]

The rule (written down before the curves existed): the first val step s after which neither
val/ce falls nor val/reward rises by more than 1 % over the next 100 steps, for every run (the
polychromic run and its λ-0 twin, which trains baseline bit for bit). Prints the val table and
the chosen step, and draws val_curves.png (+ .pdf) beside the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HORIZON, TOLERANCE = 100, 0.01


def settled(curve: pd.Series, lower_is_better: bool) -> list[int]:
    """Val steps s with a value at s + HORIZON that improves on s's by at most TOLERANCE."""
    out = []
    for s, v in curve.items():
        later = curve.get(s + HORIZON)
        if later is None:
            continue
        better = v - later if lower_is_better else later - v
        # Relative to |v|; from v = 0 (a reward no sample earned yet) any gain is unbounded.
        if better <= 0 or (v != 0 and better / abs(v) <= TOLERANCE):
            out.append(int(s))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("curves")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    df = pd.read_csv(args.curves, sep="\t")
    val = df[df.metric.str.startswith("val/")].pivot_table(
        index="step", columns=["run", "metric"], values="value"
    )
    print(val.round(4).to_markdown())
    ok = None
    for (run, metric), curve in val.items():
        steps = set(settled(curve.dropna(), lower_is_better=metric == "val/ce"))
        print(f"{run} {metric}: settled at {sorted(steps)}")
        ok = steps if ok is None else ok & steps
    chosen = min(ok) if ok else None
    last = int(val.index.max())
    print(
        f"chosen training length: {chosen}"
        if chosen is not None
        else f"chosen training length: none (no step settles; the curves end at step {last}: "
        f"run them longer)"
    )
    out = Path(args.out or Path(args.curves).parent)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("val/ce", "val/reward"), strict=True):
        for run in sorted({r for r, _ in val.columns}):
            if (run, metric) in val:
                c = val[(run, metric)].dropna()
                ax.plot(c.index, c.values, marker=".", label=run)
        if chosen is not None:
            ax.axvline(chosen, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"val_curves.{ext}", dpi=150)


if __name__ == "__main__":
    main()
