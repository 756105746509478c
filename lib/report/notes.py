"""The table's footnotes: what each number is, which instruments measured it, what n could show."""

from __future__ import annotations

from typing import Any

from lib.report.rows import MDE_METRIC, small_systems
from lib.schemas import METRIC, SYSTEM_LABELS, SYSTEMS


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
        f"Semantic and effective diversity (mean pairwise 1 − cos), BERTScore F1{layer} and the "
        f"social Pass@k checker use the evaluation encoder {enc['eval']}; training scored its "
        f"samples with {enc['train']}."
    ]
    if enc["same"]:
        notes.append(
            f"Caution: evaluation and training share one encoder ({enc['eval']}): these metrics measure "
            "with the instrument the polychromic objective optimised, so a gain in them may be that "
            "encoder's blind spot rather than a real difference."
        )
    return notes


def _mde_note(stats: dict[str, Any]) -> str:
    s = stats["settings"]
    ns = sorted(
        {c[MDE_METRIC]["n_pairs"] for c in stats["comparisons"].values() if MDE_METRIC in c}
    )
    label = METRIC[MDE_METRIC].label
    return (
        f"Min. detectable {label} diff.: the true mean paired difference (Polychromic − column) "
        f"a two-sided paired t-test at alpha = {s['alpha']} finds with power {s['power']}, from "
        f"the observed SD of the per-prompt differences and the n = "
        f"{'/'.join(map(str, ns))} paired prompts (noncentral t); in parentheses the same at "
        f"alpha / {s['holm_family_size']} (Bonferroni, Holm's strictest step: what † may need). "
        f"A smaller true difference is missed more than {1 - s['power']:.0%} of the time."
    )


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
        "Effective diversity: semantic diversity among the samples of a prompt that pass its "
        "Pass@k checker; missing with fewer than 2 passing, so its mean is over the prompts of "
        "the coverage row (defined / all prompts). Pass^k = C(c, k)/C(n, k): all k of k samples "
        "pass (tau-bench; Pass@k: any of them).",
        _mde_note(stats),
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
