"""Judge prompts and robust parsing of the strict two-line answer format.

Both backends see the same `Question`: the API judge is asked to answer `Verdict: <choice>` then
`Reason: ...`; the local judge scores each `Verdict: <choice>` continuation by log-probability.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAIR_CHOICES = ("A", "B", "tie")
PASS_CHOICES = ("yes", "no")
UNPARSEABLE = "unparseable"
MISSING = "missing"

PAIR_SYSTEM = (
    "You are an impartial judge. You compare two responses, A and B, to the same input and decide "
    "which one is better: more relevant, coherent, natural and helpful for the input. Ignore the "
    "order in which they are shown and do not prefer a response for being longer. If they are "
    "equally good or equally bad, answer tie.\n"
    "Answer in exactly two lines and nothing else:\n"
    "Verdict: A or B or tie\n"
    "Reason: one short sentence"
)

PASS_SYSTEM = (
    "You are a strict grader. You decide whether one response to an input is acceptable under "
    "this rubric:\n{rubric}\n"
    "Answer in exactly two lines and nothing else:\n"
    "Verdict: yes or no\n"
    "Reason: one short sentence"
)


@dataclass(frozen=True)
class Question:
    system: str
    user: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    verdict: str  # one of the question's choices | unparseable | missing
    reason: str | None


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars] + " [...]"


def pair_question(
    domain: str, input_text: str, response_a: str, response_b: str, max_chars: int
) -> Question:
    user = (
        f"Task domain: {domain}\n\n"
        f"Input:\n<<<\n{_clip(input_text, max_chars)}\n>>>\n\n"
        f"Response A:\n<<<\n{_clip(response_a, max_chars)}\n>>>\n\n"
        f"Response B:\n<<<\n{_clip(response_b, max_chars)}\n>>>"
    )
    return Question(PAIR_SYSTEM, user, PAIR_CHOICES)


def pass_question(
    domain: str, input_text: str, response: str, rubric: str, max_chars: int
) -> Question:
    user = (
        f"Task domain: {domain}\n\n"
        f"Input:\n<<<\n{_clip(input_text, max_chars)}\n>>>\n\n"
        f"Response:\n<<<\n{_clip(response, max_chars)}\n>>>"
    )
    return Question(PASS_SYSTEM.format(rubric=rubric.strip()), user, PASS_CHOICES)


_MARKUP = re.compile(r"[*_`#\[\]\"'()]")
_VERDICT = re.compile(
    r"^\s*verdict\s*[:=\-]\s*(?:response|option|answer)?\s*([a-z]+)\b", re.IGNORECASE | re.MULTILINE
)
_REASON = re.compile(r"^[\s*_#]*reason[\s*_]*[:=\-][\s*_]*(.+)$", re.IGNORECASE | re.MULTILINE)


def parse_answer(text: str, choices: tuple[str, ...]) -> Answer:
    """The verdict of a judge's text answer, or `unparseable`.

    Accepts markdown decoration (`**Verdict:** B`), `Response A`, any case, and a bare choice on
    the first line; the first `Verdict:` line wins. A verdict that is not one of `choices` (e.g.
    `Verdict: both`) is unparseable, never guessed.
    """
    clean = _MARKUP.sub("", text or "")
    by_lower = {c.lower(): c for c in choices}
    reason_match = _REASON.search(text or "")
    reason = reason_match.group(1).strip(" *_").strip()[:500] if reason_match else None
    m = _VERDICT.search(clean)
    if m:
        word = m.group(1).lower()
    else:
        first = clean.strip().splitlines()[0].strip().rstrip(".").lower() if clean.strip() else ""
        word = first
    if word in by_lower:
        return Answer(by_lower[word], reason)
    return Answer(UNPARSEABLE, reason)
