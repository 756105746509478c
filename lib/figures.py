"""Figures for the paper (PDF + PNG, matplotlib Agg) and the small tables `dvc plots` draws.

Every figure reads the stats dict (`metrics/stats.json`), so its means and CIs are the table's.
Colours are Okabe-Ito (colour-blind safe) and fixed per system across figures; markers differ too,
so the figures survive greyscale printing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on CI or the GPU box; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lib.config import param  # noqa: E402
from lib.io import atomic_path  # noqa: E402
from lib.schemas import METRICS, PASS_AT_K, PASS_HAT_K, SYSTEM_LABELS, SYSTEMS  # noqa: E402

COLORS = {
    "zero_shot": "#999999",  # grey
    "few_shot": "#56B4E9",  # sky blue
    "baseline": "#0072B2",  # blue
    "gem": "#009E73",  # bluish green
    "polychromic": "#D55E00",  # vermillion
}
MARKERS = {"zero_shot": "o", "few_shot": "s", "baseline": "^", "gem": "D", "polychromic": "*"}
# Labels with their direction, from the one metric table (lib.schemas.METRICS); inv_self_bleu is
# the figures' own derived axis.
METRIC_LABELS = {m.name: m.display for m in METRICS} | {"inv_self_bleu": "1 − Self-BLEU ↑"}
OUTCOME_COLORS = {"win": "#009E73", "tie": "#BBBBBB", "loss": "#D55E00"}


@dataclass(frozen=True)
class PlotParams:
    """`plot:` in params.yaml (metric names are checked against stats.json by stages.plot)."""

    formats: tuple[str, ...] = param(pattern=r"pdf|png|svg", doc="pdf | png | svg")
    dpi: int = param(ge=10, le=2400)  # PNG only; PDF is vector
    # x of the trade-off: a SCORE_METRICS name, or inv_self_bleu (1 − Self-BLEU)
    diversity_metric: str = param()
    quality_metrics: tuple[str, ...] = param()
    tradeoff_quality: str = param()  # y of plots/data/tradeoff.csv (dvc plots)
    bar_metrics: tuple[str, ...] = param()


def paper_style() -> None:
    """The papers' figure style (small type, no top/right spines, TrueType in PDFs), for every
    figure here and in lib.pareto."""
    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.titlesize": 9,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by publishers
        }
    )


def save(fig: plt.Figure, out_dir: Path, name: str, p: PlotParams) -> list[Path]:
    """Write `fig` as out_dir/name.<fmt> for every format (atomic), close it, return the paths."""
    paths = []
    for fmt in p.formats:
        path = Path(out_dir) / f"{name}.{fmt}"
        # No creation date in the file: the same inputs give the same bytes (DVC md5s).
        meta = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=p.dpi, bbox_inches="tight", metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths


def summary_value(stats: Mapping[str, Any], metric: str, system: str) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) from the stats dict; NaNs where missing. inv_self_bleu = 1 − x."""
    base = "self_bleu" if metric == "inv_self_bleu" else metric
    e = stats["summary"].get(base, {}).get(system) or {}
    vals = [e.get(k) for k in ("mean", "ci_low", "ci_high")]
    m, lo, hi = (math.nan if v is None else float(v) for v in vals)
    if metric == "inv_self_bleu":
        m, lo, hi = 1 - m, 1 - hi, 1 - lo
    return m, lo, hi


# ---- data for `dvc plots` ---------------------------------------------------------------------


def pass_at_k_frame(stats: Mapping[str, Any], family: str = "pass_at_k") -> pd.DataFrame:
    """Per system and k: the mean and CI of Pass@k (`family` pass_at_k) or pass^k (pass_hat_k)."""
    cols = {"pass_at_k": PASS_AT_K, "pass_hat_k": PASS_HAT_K}[family]
    rows = []
    for s in SYSTEMS:
        for k, col in enumerate(cols, start=1):
            m, lo, hi = summary_value(stats, col, s)
            rows.append({"system": s, "k": k, family: m, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def metrics_frame(stats: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for metric in stats["summary"]:
        for s in SYSTEMS:
            m, lo, hi = summary_value(stats, metric, s)
            rows.append({"system": s, "metric": metric, "mean": m, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def tradeoff_frame(stats: Mapping[str, Any], diversity: str, quality: str) -> pd.DataFrame:
    rows = []
    for s in SYSTEMS:
        d, dlo, dhi = summary_value(stats, diversity, s)
        q, qlo, qhi = summary_value(stats, quality, s)
        rows.append(
            {
                "system": s,
                "diversity": d,
                "quality": q,
                "diversity_ci_low": dlo,
                "diversity_ci_high": dhi,
                "quality_ci_low": qlo,
                "quality_ci_high": qhi,
                "diversity_metric": diversity,
                "quality_metric": quality,
            }
        )
    return pd.DataFrame(rows)


def judge_frame(judgments: pd.DataFrame) -> pd.DataFrame:
    """Per opponent: counts and rates of win / tie / loss (missing verdicts left out of rates)."""
    rows = []
    for opp in [s for s in SYSTEMS if s != "polychromic"]:
        r = judgments[judgments["opponent"] == opp]
        counts = {k: int((r["outcome"] == k).sum()) for k in ("win", "tie", "loss", "missing")}
        n = counts["win"] + counts["tie"] + counts["loss"]
        rates = {f"{k}_rate": (counts[k] / n if n else math.nan) for k in ("win", "tie", "loss")}
        score = (counts["win"] + 0.5 * counts["tie"]) / n if n else math.nan  # 0.5 = no difference
        rows.append({"opponent": opp, **counts, "n": n, **rates, "score": score})
    return pd.DataFrame(rows)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


# ---- figures ----------------------------------------------------------------------------------


def _legend_below(fig: plt.Figure, axes: Iterable[plt.Axes], ncol: int = 5) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
            labels.setdefault(lab, lab)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=min(ncol, len(handles)),
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )


def pass_at_k_figure(stats: Mapping[str, Any]) -> plt.Figure | None:
    """Pass@k (any of k passes) and pass^k (all k pass) for k = 1…10 per system, a panel each,
    with the bootstrap CI as a band; a family no system has is left out, None if neither."""
    paper_style()
    titles = {"pass_at_k": "Pass@k (any of k passes)", "pass_hat_k": "Pass^k (all k pass)"}
    frames = {f: pass_at_k_frame(stats, f) for f in titles}
    frames = {f: df for f, df in frames.items() if not df[f].isna().all()}
    if not frames:
        return None
    fig, axes = plt.subplots(
        1, len(frames), figsize=(4.2 * len(frames), 3.2), squeeze=False, sharey=True
    )
    for ax, (family, df) in zip(axes[0], frames.items(), strict=True):
        for s in SYSTEMS:
            d = df[(df["system"] == s) & df[family].notna()]
            if d.empty:
                continue
            ax.plot(
                d["k"], d[family], color=COLORS[s], marker=MARKERS[s], ms=4, label=SYSTEM_LABELS[s]
            )
            ax.fill_between(d["k"], d["ci_low"], d["ci_high"], color=COLORS[s], alpha=0.15, lw=0)
        ax.set_xlabel("k (samples per prompt)")
        ax.set_title(titles[family])
        ax.set_xticks(range(1, 11))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean over prompts")
    axes[0][0].legend(frameon=False, loc="best")
    fig.suptitle(f"Pass@k and pass^k ({_ci_label(stats)})", y=1.0)
    fig.tight_layout()
    return fig


def _ci_label(stats: Mapping[str, Any]) -> str:
    s = stats["settings"]
    return f"{round(100 * (1 - s['alpha']))}% bootstrap CI"


def tradeoff_figure(
    stats: Mapping[str, Any], diversity: str, qualities: Sequence[str]
) -> plt.Figure | None:
    """One panel per quality metric: x = diversity, y = quality, one point per system, CI bars."""
    paper_style()
    panels = []
    for q in qualities:
        pts = [(s, summary_value(stats, diversity, s), summary_value(stats, q, s)) for s in SYSTEMS]
        pts = [p for p in pts if not (math.isnan(p[1][0]) or math.isnan(p[2][0]))]
        if pts:
            panels.append((q, pts))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2), squeeze=False)
    for ax, (q, pts) in zip(axes[0], panels, strict=True):
        for s, (d, dlo, dhi), (m, lo, hi) in pts:
            ax.errorbar(
                d,
                m,
                xerr=[[d - dlo], [dhi - d]],
                yerr=[[m - lo], [hi - m]],
                fmt=MARKERS[s],
                color=COLORS[s],
                ms=8 if s == "polychromic" else 6,
                capsize=2,
                label=SYSTEM_LABELS[s],
            )
        ax.set_xlabel(METRIC_LABELS.get(diversity, diversity))
        ax.set_ylabel(METRIC_LABELS.get(q, q))
        ax.grid(alpha=0.3)
        ax.margins(0.15)
    _legend_below(fig, axes[0])
    fig.suptitle(f"Diversity vs quality (mean over prompts, {_ci_label(stats)})", y=1.0)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def metric_bars_figure(stats: Mapping[str, Any], metrics: Sequence[str]) -> plt.Figure | None:
    """One small panel per metric, one bar per system with its CI; missing values are marked n/a."""
    paper_style()
    metrics = [m for m in metrics if m in stats["summary"] or m == "inv_self_bleu"]
    if not metrics:
        return None
    ncol = min(3, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.1 * ncol, 2.5 * nrow), squeeze=False)
    x = np.arange(len(SYSTEMS))
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for i, s in enumerate(SYSTEMS):
            m, lo, hi = summary_value(stats, metric, s)
            if math.isnan(m):
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            ax.bar(i, m, color=COLORS[s], label=SYSTEM_LABELS[s], width=0.75)
            ax.errorbar(i, m, yerr=[[m - lo], [hi - m]], color="black", capsize=2, lw=0.8)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.set_xticks(x, [SYSTEM_LABELS[s] for s in SYSTEMS], rotation=35, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _judge_label(r: Any) -> str:
    """`vs GEM: 0.62 (5/2/1)`: the score win + tie/2 and the counts; in words when no pair was decided."""
    if r.win + r.loss == 0:
        return f"vs {SYSTEM_LABELS[r.opponent]}: uninformative (all {r.n} ties)"
    return f"vs {SYSTEM_LABELS[r.opponent]}: {(r.win + r.tie / 2) / r.n:.2f} ({r.win}/{r.tie}/{r.loss})"


def judge_figure(judge: pd.DataFrame, backend: str) -> plt.Figure | None:
    """Stacked horizontal bars: polychromic's win / tie / loss rates against each opponent."""
    paper_style()
    judge = judge[judge["n"] > 0]
    if judge.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.0, 0.45 * len(judge) + 1.4))
    y = np.arange(len(judge))[::-1]
    left = np.zeros(len(judge))
    for k in ("win", "tie", "loss"):
        vals = judge[f"{k}_rate"].to_numpy(float)
        ax.barh(y, vals, left=left, color=OUTCOME_COLORS[k], label=k, height=0.6)
        for yi, lft, v in zip(y, left, vals, strict=True):
            if v >= 0.08:
                ax.text(lft + v / 2, yi, f"{v:.0%}", ha="center", va="center", fontsize=7)
        left += vals
    ax.set_yticks(y, [_judge_label(r) for r in judge.itertuples()])
    ax.set_xlim(0, 1)
    ax.axvline(0.5, color="black", lw=0.6, ls=":")
    ax.set_xlabel("share of judged pairs (Polychromic's side)")
    ax.set_title(f"Pairwise judge, backend: {backend}")
    ax.legend(ncol=3, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    return fig


TRAIN_SYSTEMS = ("baseline", "gem", "polychromic")


def read_train_log(train_logs: Path, system: str, name: str) -> pd.DataFrame | None:
    """DVCLive's TSV (timestamp, step, <name>) of metric train/<name>, or None if absent."""
    path = Path(train_logs) / system / "plots" / "metrics" / "train" / f"{name}.tsv"
    if not path.exists():
        return None
    df = pd.read_csv(path, sep="\t")
    if "step" not in df.columns or name not in df.columns:
        raise ValueError(f"{path}: expected DVCLive columns 'step' and '{name}', got {list(df)}")
    return df


# Panel order and titles; any other DVCLive curve gets a panel of its own after these.
CURVE_TITLES = {
    "ce": "cross-entropy (all systems)",
    "loss": "objective: baseline = CE, polychromic = CE − λ·credit term",
    "gem_loss": "GEM objective (its own scale)",
    "lambda_term": "polychromic: λ term",
    "diversity": "polychromic: diversity of the sampled set",
    "step_time": "seconds per step",
}


def training_panels(train_logs: Path) -> list[tuple[str, str, list[tuple[str, pd.DataFrame]]]]:
    """(curve, title, [(system, log)]) per panel: one curve per panel, the systems overlaid.

    GEM's `loss` is a different objective from CE (Li et al. 2025), so it never shares an axis
    with the others' loss: it gets the `gem_loss` panel.
    """
    found = {
        f.stem
        for s in TRAIN_SYSTEMS
        for f in (Path(train_logs) / s / "plots" / "metrics" / "train").glob("*.tsv")
    }
    names = [n for n in CURVE_TITLES if n in found or (n == "gem_loss" and "loss" in found)]
    names += sorted(found - set(CURVE_TITLES))
    panels = []
    for name in names:
        column = "loss" if name == "gem_loss" else name
        systems = (
            ["gem"]
            if name == "gem_loss"
            else [s for s in TRAIN_SYSTEMS if s != "gem" or name != "loss"]
        )
        curves = [(s, read_train_log(train_logs, s, column)) for s in systems]
        curves = [(s, d) for s, d in curves if d is not None]
        if curves:
            panels.append((column, CURVE_TITLES.get(name, name), curves))
    return panels


def training_figure(train_logs: Path) -> plt.Figure | None:
    """Every training curve in its own panel with baseline / gem / polychromic overlaid."""
    paper_style()
    panels = training_panels(train_logs)
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False)
    for ax, (name, title, curves) in zip(axes.flat, panels, strict=False):
        for s, d in curves:
            ax.plot(d["step"], d[name], color=COLORS[s], label=SYSTEM_LABELS[s], lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.remove()
    _legend_below(fig, list(axes.flat)[: len(panels)], ncol=3)
    fig.tight_layout(rect=(0, 0.1 / nrow, 1, 1))
    return fig
