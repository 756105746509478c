"""The paper's results table, as Markdown and LaTeX (booktabs), from the stats dict.

Rows are metrics, columns are systems. Each cell is the mean over prompts with its bootstrap CI;
the best system per row is bold; † marks a Holm-corrected Wilcoxon p < alpha against polychromic.
The judge row holds polychromic's judge score (win + tie/2) against the column's system with the
win/tie/loss counts (polychromic's own column shows —); a judge that decided no pair says so in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib.schemas import SYSTEMS
from lib.stats import TARGET

SYSTEM_LABELS = {
    "zero_shot": "Zero-shot",
    "few_shot": "Few-shot",
    "baseline": "Baseline LoRA",
    "gem": "GEM",
    "polychromic": "Polychromic",
}


@dataclass(frozen=True)
class Row:
    metric: str
    label: str  # Markdown/Unicode text
    latex: str
    higher_is_better: bool | None  # None: no best marked


ROWS: tuple[Row, ...] = (
    Row("self_bleu", "Self-BLEU ↓", r"Self-BLEU $\downarrow$", False),
    Row("distinct_2", "Distinct-2 ↑", r"Distinct-2 $\uparrow$", True),
    Row("semantic_diversity", "Semantic diversity ↑", r"Semantic diversity $\uparrow$", True),
    Row("rouge_l", "ROUGE-L ↑", r"ROUGE-L $\uparrow$", True),
    Row("bertscore_f1", "BERTScore ↑", r"BERTScore $\uparrow$", True),
    Row("pass_at_1", "Pass@1 ↑", r"Pass@1 $\uparrow$", True),
    Row("pass_at_5", "Pass@5 ↑", r"Pass@5 $\uparrow$", True),
    Row("pass_at_10", "Pass@10 ↑", r"Pass@10 $\uparrow$", True),
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


# What `dvc exp show` / `dvc metrics show` show by default: metrics/headline/<system>.json, one
# small file per system, so `dvc metrics show` is a table with a row per system.
HEADLINE = (
    "pass_at_1",
    "pass_at_5",
    "pass_at_10",
    "semantic_diversity",
    "self_bleu",
    "rouge_l",
    "bertscore_f1",
)


def headline(stats: dict[str, Any], decimals: int = 4) -> dict[str, Any]:
    """{system: {metric: mean}} for HEADLINE, plus `poly_judge_score`: the judge's score of
    polychromic (win + tie/2) against that system (absent for polychromic itself; null for a
    system the judge did not compare). A metric that could not be computed is null, never 0."""

    def r(v: Any) -> float | None:
        return None if v is None else round(float(v), decimals)

    out: dict[str, Any] = {}
    for s in SYSTEMS:
        row = {}
        for m in HEADLINE:
            row[m] = r((stats["summary"].get(m, {}).get(s) or {}).get("mean"))
        if s != TARGET:  # DVC drops null metrics anyway: the column reads "-" for polychromic
            e = ((stats.get("judge") or {}).get("opponents") or {}).get(s) or {}
            row["poly_judge_score"] = r(e.get("score"))  # win + tie/2, lib.stats
        out[s] = row
    return out


def small_systems(stats: dict[str, Any]) -> dict[str, int]:
    """Systems scored on fewer prompts than the most-scored one: marked ‡, never bold."""
    n = stats.get("n_prompts", {})
    most = max(n.values(), default=0)
    return {s: n[s] for s in SYSTEMS if s in n and n[s] < most}


def _header(stats: dict[str, Any]) -> list[str]:
    small = small_systems(stats)
    return [SYSTEM_LABELS[s] + (" ‡" if s in small else "") for s in SYSTEMS]


def instruments(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The encoders every score@<system> measured with (its metrics JSON), which must agree.

    A table that mixed instruments across its columns would compare nothing, so a difference fails.
    """
    seen = {}
    for system, m in summaries.items():
        if "encoders" not in m:
            raise ValueError(
                f"score metrics of {system} name no encoders (scored before they were recorded)"
            )
        bs = m.get("bertscore") or {}
        seen[system] = {
            "train": m["encoders"]["train"]["model"],
            "eval": m["encoders"]["eval"]["model"],
            "same": bool(m["encoders"]["same"]),
            "bertscore_layer": bs.get("layer"),
            "bertscore_hash": bs.get("hash"),
        }
    first = next(iter(seen.values()))
    if any(x != first for x in seen.values()):
        raise ValueError(f"the systems were scored with different instruments: {seen}")
    return first


def _encoder_notes(stats: dict[str, Any]) -> list[str]:
    enc = stats["settings"].get("encoders")
    if enc is None:
        return ["Encoders: not recorded (the stats stage was not given the score metrics)."]
    layer = f" (layer {enc['bertscore_layer']})" if enc.get("bertscore_layer") else ""
    notes = [
        f"Semantic diversity (mean pairwise 1 − cos), BERTScore F1{layer} and the social Pass@k "
        f"checker use the evaluation encoder {enc['eval']}; training scored its samples with "
        f"{enc['train']}."
    ]
    if enc["same"]:
        notes.append(
            f"Caution: evaluation and training share one encoder ({enc['eval']}): these metrics measure "
            "with the instrument the polychromic objective optimised, so a gain in them may be that "
            "encoder's blind spot rather than a real difference."
        )
    return notes


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


def build_rows(stats: dict[str, Any], decimals: int = 3, ci_format: str = "halfwidth"):
    """[(Row, [Cell per system])] in table order."""
    alpha = stats["settings"]["alpha"]
    out = []
    for row in ROWS:
        cells = _metric_cells(stats, row.metric, row.higher_is_better, alpha, decimals, ci_format)
        out.append((row, cells))
    out.append((JUDGE_ROW, _judge_cells(stats, alpha, decimals, ci_format)))
    return out


def footnotes(stats: dict[str, Any], ci_format: str = "halfwidth") -> list[str]:
    s = stats["settings"]
    level = round(100 * (1 - s["alpha"]))
    ci = "± half-width of the" if ci_format == "halfwidth" else "[low, high] of the"
    counts = sorted(set(stats["n_prompts"].values()))
    n = (
        f"n = {counts[0]}"
        if len(counts) == 1
        else "n = " + "/".join(str(stats["n_prompts"][sy]) for sy in SYSTEMS)
    )
    notes = [
        f"Mean over test prompts ({n} per system) {ci} {level}% percentile bootstrap "
        f"CI ({s['bootstrap']} resamples, seed {s['seed']}). Bold: best per row.",
        f"† Holm-corrected (family of {s['holm_family_size']} comparisons) Wilcoxon signed-rank "
        f"p < {s['alpha']} against Polychromic, paired by prompt.",
        "Distinct-2: distinct / total bigrams per prompt (not Li et al.'s per-token ratio).",
        *_encoder_notes(stats),
    ]
    small = small_systems(stats)
    if small:
        most = max(stats["n_prompts"].values())
        which = ", ".join(f"{SYSTEM_LABELS[sy]}: {k} of {most}" for sy, k in small.items())
        notes.append(
            f"‡ Scored on fewer prompts than the others ({which}): not comparable, never bold."
        )
    judge = stats.get("judge")
    if judge is None:
        notes.append("Judge score: n/a (no judge comparisons).")
    else:
        backends = ", ".join(judge["backend"])
        models = ", ".join(judge["judge_model"])
        local = (
            " The local judge is a small local model, not an API LLM judge: treat it as indicative."
            if "local" in judge["backend"]
            else ""
        )
        n_missing = sum(e.get("missing", 0) for e in judge["opponents"].values())
        notes.append(
            f"Judge score: win + tie/2 of Polychromic against the column system (0.5 = no "
            f"difference), with (wins/ties/losses); each pair asked in both orders, a flip is a tie; "
            f"'uninformative' = the judge decided no pair. Judge backend **{backends}** "
            f"({models}); † Holm-corrected sign test (wins vs losses) p < {s['alpha']}."
            + (f" {n_missing} comparisons missing (judge.allow_missing)." if n_missing else "")
            + local
        )
    return notes


def _md_cell(c: Cell) -> str:
    if c.text is None:
        return "n/a"
    t = f"**{c.text}**" if c.bold else c.text
    return t + (" †" if c.dagger else "")


def _n_inputs(stats: dict[str, Any]) -> str:
    return "/".join(str(c) for c in sorted(set(stats.get("n_prompts", {}).values()))) or "?"


def to_markdown(stats: dict[str, Any], decimals: int = 3, ci_format: str = "halfwidth") -> str:
    header = ["Metric", *_header(stats)]
    split = stats["settings"].get("split", "test")
    lines = [
        f"Evaluated on the **{split}** split ({_n_inputs(stats)} inputs).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + [":-:"] * len(SYSTEMS)) + "|",
    ]
    for row, cells in build_rows(stats, decimals, ci_format):
        lines.append("| " + " | ".join([row.label, *(_md_cell(c) for c in cells)]) + " |")
    lines.append("")
    lines.extend(f"- {n}" for n in footnotes(stats, ci_format))
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_cell(c: Cell) -> str:
    if c.text is None:
        return "n/a"
    if c.dash:
        return "---"
    t = c.text.replace("±", r"$\pm$")
    t = rf"\textbf{{{t}}}" if c.bold else t
    return t + (r"$^\dagger$" if c.dagger else "")


def _tex_note(text: str) -> str:
    t = tex_escape(text.replace("**", ""))
    # Text-mode < and > print as ¡ and ¿ in OT1 fonts.
    for a, b in (
        ("†", r"$^\dagger$"),
        ("‡", r"$^\ddagger$"),
        ("±", r"$\pm$"),
        ("<", "$<$"),
        (">", "$>$"),
    ):
        t = t.replace(a, b)
    return t


def to_latex(
    stats: dict[str, Any],
    decimals: int = 3,
    ci_format: str = "halfwidth",
    caption: str | None = None,
    label: str = "tab:results",
) -> str:
    if caption is None:
        caption = f"Diversity and quality of each system on the {stats['settings'].get('split', 'test')} prompts."
    cols = "l" + "c" * len(SYSTEMS)
    lines = [
        r"% Generated by stages/stats.py; needs \usepackage{booktabs}.",
        r"\begin{table*}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(
            ["Metric", *(tex_escape(h).replace("‡", r"$^\ddagger$") for h in _header(stats))]
        )
        + r" \\",
        r"\midrule",
    ]
    rows = build_rows(stats, decimals, ci_format)
    for i, (row, cells) in enumerate(rows):
        if row is JUDGE_ROW and i:
            lines.append(r"\midrule")
        lines.append(" & ".join([row.latex, *(_tex_cell(c) for c in cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip\footnotesize"]
    lines += [_tex_note(n) + r"\par" for n in footnotes(stats, ci_format)]
    lines.append(r"\end{table*}")
    return "\n".join(lines) + "\n"
