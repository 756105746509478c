"""Pass@k checkers, one per domain: the same for every system, and not trivially saturated.

- code: the HumanEval tests run against prompt + sample in `lib.sandbox` (pass = the tests ran to
  the end).
- qa: the SQuAD-normalised reference appears in the normalised sample as a whole-token span, or
  the SQuAD token F1 reaches `qa_f1_threshold`; any reference may satisfy it.
- social: cosine (evaluation encoder, `score.eval_encoder`, not the one training scored against) of
  the sample to the first reference ≥ τ, τ calibrated on val with the same encoder so that a human
  reply passes `social_human_pass_rate` of the time (see `social_tau`).
- creative: no checker without the judge → Pass@k is NaN.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from lib.sandbox import SandboxLimits, humaneval_program, run_many

CHECKER_NAMES = {
    "code": "humaneval-tests-in-sandbox",
    "qa": "squad-normalised-containment-or-token-f1",
    "social": "{encoder}-cosine-to-reference-ge-tau",
    "creative": None,  # not applicable without the judge
}


def checker_name(domain: str, encoder_model: str) -> str | None:
    """The checker's recorded name; the social one names the encoder it measures with."""
    name = CHECKER_NAMES[domain]
    return None if name is None else name.format(encoder=encoder_model)


_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation, drop articles, squeeze spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between normalised prediction and reference."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not ref:
        raise ValueError(f"token_f1: reference {reference!r} is empty after normalisation")
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def qa_pass(sample: str, references: Sequence[str], f1_threshold: float) -> bool:
    """Pass if some reference appears (whole tokens) in the sample or reaches token F1 ≥ threshold.

    Whole-token containment, so the answer "4" is not found inside "42".
    """
    if not 0 < f1_threshold <= 1:
        raise ValueError(f"qa_pass: f1_threshold must be in (0, 1], got {f1_threshold}")
    usable = [r for r in references if isinstance(r, str) and normalize_answer(r)]
    if not usable:
        raise ValueError(f"qa_pass: no reference is non-empty after normalisation: {references!r}")
    hyp = f" {normalize_answer(sample)} "
    for ref in usable:
        if f" {normalize_answer(ref)} " in hyp or token_f1(sample, ref) >= f1_threshold:
            return True
    return False


def social_tau(
    reference_sets: Sequence[Sequence[str]],
    pass_rate: float,
    embed_fn: Callable[[list[str]], np.ndarray],
    where: str = "val",
) -> tuple[float, int]:
    """τ such that human replies pass at `pass_rate` against the first reference of their input.

    For each val input with ≥ 2 human replies, similarities s = cos(reply_j, reply_0), j ≥ 1. τ is
    the largest value with at least `pass_rate` of all s ≥ τ: the ⌈rate·m⌉-th largest of m values.
    Returns (τ, m).
    """
    if not 0 < pass_rate <= 1:
        raise ValueError(f"social_human_pass_rate must be in (0, 1], got {pass_rate}")
    usable = [list(r) for r in reference_sets if r is not None and len(r) >= 2]
    if not usable:
        raise ValueError(
            f"{where}: no input has >= 2 references, cannot calibrate the social checker's τ "
            "(the val split must keep several human replies per input)"
        )
    texts = [t for refs in usable for t in refs]
    emb = np.asarray(embed_fn(texts), dtype=np.float64)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims: list[float] = []
    start = 0
    for refs in usable:
        block = emb[start : start + len(refs)]  # (len(refs), d)
        start += len(refs)
        sims.extend((block[1:] @ block[0]).tolist())
    ordered = sorted(sims, reverse=True)
    return float(ordered[math.ceil(pass_rate * len(ordered)) - 1]), len(ordered)


def code_passes(
    items: Sequence[tuple[str, str, str]],
    limits: SandboxLimits,
    workers: int,
    desc: str | None = None,
) -> list[bool]:
    """items: (meta JSON, completion, where) → whether each completion passes its HumanEval tests
    (`desc`: a progress bar with that label)."""
    programs = []
    for meta_json, completion, where in items:
        try:
            meta = json.loads(meta_json)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: meta is not valid JSON: {e}") from e
        missing = [k for k in ("prompt", "test", "entry_point") if not meta.get(k)]
        if missing:
            raise ValueError(f"{where}: code meta lacks {missing}")
        programs.append(
            humaneval_program(meta["prompt"], completion, meta["test"], meta["entry_point"])
        )
    return [r.passed for r in run_many(programs, limits, workers, desc)]
