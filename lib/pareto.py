"""The quality–diversity Pareto front over DVC experiments (scripts/pareto.py, select_sweep.py).

One point per experiment (diversity, quality), the non-dominated ones starred and joined, each
labelled with its swept params; labels are placed so that none overlaps another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from lib.experiments import exp_states, lookup
from lib.figures import COLORS, paper_style


def non_dominated(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (diversity, quality) points no other point dominates, both maximised.

    q dominates p when q ≥ p in both coordinates and > in at least one; exact duplicates do not
    dominate each other (both stay on the front). Points with a NaN are never on the front.
    """
    pts = [(float(a), float(b)) for a, b in points]
    out = []
    for i, (x, y) in enumerate(pts):
        if math.isnan(x) or math.isnan(y):
            out.append(False)
            continue
        dominated = any(
            (qx >= x and qy >= y and (qx > x or qy > y))
            for j, (qx, qy) in enumerate(pts)
            if j != i and not (math.isnan(qx) or math.isnan(qy))
        )
        out.append(not dominated)
    return out


def pareto_figure(df: pd.DataFrame, x_label: str, y_label: str) -> plt.Figure:
    """Scatter of experiments (columns diversity, quality, label, on_front), front as a step line."""
    paper_style()
    fig, ax = plt.subplots(figsize=(4.4, 3.4))
    off = df[~df["on_front"]]
    on = df[df["on_front"]].sort_values("diversity")
    ax.scatter(off["diversity"], off["quality"], color="#999999", s=22, label="dominated")
    ax.scatter(
        on["diversity"],
        on["quality"],
        color=COLORS["polychromic"],
        marker="*",
        s=80,
        label="Pareto front",
        zorder=3,
    )
    if len(on) > 1:
        ax.plot(on["diversity"], on["quality"], color=COLORS["polychromic"], lw=1, zorder=2)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    ax.set_title("Polychromic experiments: quality–diversity front")
    _place_labels(fig, ax, df)  # after the limits are set: the boxes are measured in pixels
    ax.legend(frameon=False, loc="best")
    return fig


# Where a label may sit around its point (offset in points, horizontal alignment), in order of
# preference: above-right first, as matplotlib users expect.
_LABEL_SPOTS = (
    ((4, 4), "left"),
    ((4, -10), "left"),
    ((-4, 4), "right"),
    ((-4, -10), "right"),
    ((4, 13), "left"),
    ((4, -19), "left"),
    ((-4, 13), "right"),
    ((-4, -19), "right"),
)


def _place_labels(fig: plt.Figure, ax: plt.Axes, df: pd.DataFrame) -> None:
    """Annotate each point with its label at the first spot where it overlaps no label already
    placed (three tied configurations once stacked two labels on one another); the last spot
    when none is free."""
    fig.canvas.draw()  # settles the limits: before a draw, extents come out in stale pixels
    renderer = fig.canvas.get_renderer()
    placed = []
    for _, r in df.sort_values(["quality", "diversity"], ascending=False).iterrows():
        for offset, ha in _LABEL_SPOTS:
            ann = ax.annotate(
                str(r["label"]),
                (float(r["diversity"]), float(r["quality"])),
                textcoords="offset points",
                xytext=offset,
                ha=ha,
                fontsize=7,
            )
            box = ann.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(b) for b in placed):
                break
            ann.remove()
        else:
            ax.add_artist(ann)  # nowhere free: the last spot, overlapping
        placed.append(box)


def label_boxes(fig: plt.Figure) -> list[Any]:
    """The window extents of every point label on the figure's axes (for tests)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for ax in fig.axes for a in ax.texts]


def experiment_rows(
    exp_show: Sequence[Mapping[str, Any]],
    metrics_file: str,
    diversity: str,
    quality: str,
    params: Sequence[str] = ("loss.lambda",),
    params_file: str = "params.yaml",
    where: Mapping[str, Any] | None = None,
    system: str | None = None,
) -> pd.DataFrame:
    """One row per experiment with a value for both metrics: name, params, diversity, quality.

    `diversity` may be `inv_self_bleu` (1 − self_bleu). Experiments without the metrics file or a
    value (failed, queued) are left out with a message, and so are those whose params differ from
    `where` (e.g. {"eval_split": "val"}: never mix val and test points). With `system`, the metrics
    are read under that key (metrics/headline.json holds every system). Identical rows (the
    workspace and the experiment it holds) appear once, under the experiment's name.
    """
    rows, seen = [], {}
    for st in exp_states(exp_show):
        data = st.get("data") or {}
        rev = str(st.get("rev", ""))
        name = st.get("name") or (rev if rev == "workspace" else rev[:7])
        met = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
        if met and system:
            met = met.get(system)
        par = ((data.get("params") or {}).get(params_file) or {}).get("data") or {}
        off = {k: lookup(par, k) for k, v in (where or {}).items() if lookup(par, k) != v}
        if off:
            print(f"pareto: {name}: {off} (want {dict(where or {})}); skipped")
            continue
        if not met:
            print(f"pareto: {name}: no {metrics_file}; skipped")
            continue
        key = "self_bleu" if diversity == "inv_self_bleu" else diversity
        d, q = lookup(met, key), lookup(met, quality)
        if d is None or q is None:
            print(f"pareto: {name}: {key if d is None else quality} missing; skipped")
            continue
        d = 1 - float(d) if diversity == "inv_self_bleu" else float(d)
        pvals = {p: lookup(par, p) for p in params}
        sig = (tuple(pvals.items()), d, float(q))
        if sig in seen:
            if rows[seen[sig]]["experiment"] == "workspace":
                rows[seen[sig]]["experiment"] = name
            continue
        seen[sig] = len(rows)
        rows.append({"experiment": name, **pvals, "diversity": d, "quality": float(q)})
    return front_rows(
        pd.DataFrame(rows, columns=["experiment", *params, "diversity", "quality"]), params
    )


def front_rows(df: pd.DataFrame, params: Sequence[str]) -> pd.DataFrame:
    """`df` (columns diversity, quality and each param) with `on_front` and a `label` per row
    ("λ=3, objective=passk"): what `pareto_figure` draws."""
    df = df.copy()
    df["on_front"] = non_dominated(list(zip(df["diversity"], df["quality"], strict=True)))
    # λ named, the other params by value alone ("λ=10, additive"): short enough not to collide
    df["label"] = [
        ", ".join(f"λ={r[p]}" if p.endswith("lambda") else str(r[p]) for p in params)
        for _, r in df.iterrows()
    ]
    return df
