"""The rows and cells of the paper table: which metrics, in what order, and each cell's text.

Metric labels and directions come from `lib.schemas.METRICS` (declared once); rows that are not a
SCORES metric (coverage, minimum detectable difference, judge) are declared here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib.schemas import METRIC, SYSTEMS
from lib.stats import TARGET


@dataclass(frozen=True)
class Row:
    metric: str
    label: str  # Markdown/Unicode text
    latex: str
    higher_is_better: bool | None  # None: no best marked


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


_TEX_ARROW = {True: r" $\uparrow$", False: r" $\downarrow$", None: ""}


def metric_row(name: str) -> Row:
    """The table row of a SCORES metric: label and direction from lib.schemas.METRICS."""
    m = METRIC[name]
    latex = (m.latex or tex_escape(m.label)) + _TEX_ARROW[m.higher_is_better]
    return Row(name, m.display, latex, m.higher_is_better)


TABLE_METRICS = (
    "self_bleu",
    "distinct_2",
    "semantic_diversity",
    "effective_diversity",
    "rouge_l",
    "bertscore_f1",
    "pass_at_1",
    "pass_at_5",
    "pass_at_10",
    "pass_hat_5",
    "pass_hat_10",
)

COVERAGE_ROW = Row(
    "effective_diversity_coverage",
    "Effective-diversity coverage",
    "Effective-diversity coverage",
    None,
)

MDE_METRIC = "pass_at_10"  # the minimum detectable difference the table shows

MDE_ROW = Row(
    "mde",
    f"Min. detectable {METRIC[MDE_METRIC].label} diff. (Poly. vs column)",
    f"Min.\\ detectable {METRIC[MDE_METRIC].label} diff.\\ (Poly.\\ vs column)",
    None,
)

JUDGE_ROW = Row(
    "judge_score",
    "Judge score, W/T/L (Poly. vs column)",
    "Judge score, W/T/L (Poly.\\ vs column)",
    None,
)


@dataclass(frozen=True)
class Cell:
    text: str | None  # None: n/a
    bold: bool = False
    dagger: bool = False
    dash: bool = False  # the row does not apply to this column


def small_systems(stats: dict[str, Any]) -> dict[str, int]:
    """Systems scored on fewer prompts than the most-scored one: marked ‡, never bold."""
    n = stats.get("n_prompts", {})
    most = max(n.values(), default=0)
    return {s: n[s] for s in SYSTEMS if s in n and n[s] < most}


def _fmt(mean: float, lo: float, hi: float, decimals: int, ci_format: str) -> str:
    if ci_format == "interval":
        return f"{mean:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
    return f"{mean:.{decimals}f} ± {(hi - lo) / 2:.{decimals}f}"


def _metric_cells(
    stats: dict[str, Any], metric: str, higher: bool | None, alpha: float, dec: int, fmt: str
) -> list[Cell]:
    summ = stats["summary"].get(metric)
    if summ is None:
        return [Cell(None) for _ in SYSTEMS]
    means = {s: summ[s]["mean"] for s in SYSTEMS}
    small = small_systems(stats)
    present = [round(v, dec) for s, v in means.items() if v is not None and s not in small]
    best = None
    if higher is not None and present:
        best = max(present) if higher else min(present)
    cells = []
    for s in SYSTEMS:
        m = means[s]
        if m is None:
            cells.append(Cell(None))
            continue
        dagger = False
        if s != TARGET:
            p = stats["comparisons"][s][metric]["p_holm"]
            dagger = p is not None and p < alpha
        cells.append(
            Cell(
                _fmt(m, summ[s]["ci_low"], summ[s]["ci_high"], dec, fmt),
                bold=best is not None and s not in small and round(m, dec) == best,
                dagger=dagger,
            )
        )
    return cells


def _judge_cells(stats: dict[str, Any], alpha: float, dec: int, fmt: str) -> list[Cell]:
    judge = stats.get("judge")
    cells = []
    for s in SYSTEMS:
        if s == TARGET:
            cells.append(Cell("—", dash=True))
            continue
        e = (judge or {}).get("opponents", {}).get(s)
        if not e or e.get("score") is None:
            cells.append(Cell(None))
            continue
        missing = f", {e['missing']} missing" if e.get("missing") else ""
        if not e["informative"]:
            cells.append(Cell(f"uninformative: all {e['n']} ties{missing}"))
            continue
        p = e.get("p_sign_holm")
        wtl = f" ({e['win']}/{e['tie']}/{e['loss']}{missing})"
        cells.append(
            Cell(
                _fmt(e["score"], e["score_ci_low"], e["score_ci_high"], dec, fmt) + wtl,
                dagger=p is not None and p < alpha,
            )
        )
    return cells


def _coverage_cells(stats: dict[str, Any], dec: int) -> list[Cell]:
    """Share of prompts with an effective diversity, `0.625 (5/8)`; n/a where no checker applies."""
    cov = stats.get("effective_diversity_coverage") or {}
    cells = []
    for s in SYSTEMS:
        e = cov.get(s) or {}
        f = e.get("fraction")
        cells.append(Cell(None if f is None else f"{f:.{dec}f} ({e['defined']}/{e['prompts']})"))
    return cells


def _mde_cells(stats: dict[str, Any], dec: int) -> list[Cell]:
    """Polychromic vs the column: the detectable MDE_METRIC difference (at alpha / family)."""
    cells = []
    for s in SYSTEMS:
        if s == TARGET:
            cells.append(Cell("—", dash=True))
            continue
        c = stats["comparisons"][s].get(MDE_METRIC) or {}
        if c.get("mde") is None:
            cells.append(Cell(None))
            continue
        bonf = c.get("mde_bonferroni")
        tail = "" if bonf is None else f" ({bonf:.{dec}f})"
        cells.append(Cell(f"{c['mde']:.{dec}f}{tail}"))
    return cells


def build_rows(stats: dict[str, Any], decimals: int = 3, ci_format: str = "halfwidth"):
    """[(Row, [Cell per system])] in table order."""
    alpha = stats["settings"]["alpha"]
    out = []
    for name in TABLE_METRICS:
        row = metric_row(name)
        cells = _metric_cells(stats, row.metric, row.higher_is_better, alpha, decimals, ci_format)
        out.append((row, cells))
        if name == "effective_diversity":
            out.append((COVERAGE_ROW, _coverage_cells(stats, decimals)))
    out.append((MDE_ROW, _mde_cells(stats, decimals)))
    out.append((JUDGE_ROW, _judge_cells(stats, alpha, decimals, ci_format)))
    return out
