"""`creative`: writing prompts with no reference (diversity and judge only), the project's own.

No creative-writing set ships on PyPI, so the prompts are templated: 12 forms × 12 subjects = 144
prompts, in a fixed order. A sample is judged for diversity and, with the judge, for quality.
"""

from __future__ import annotations

from collections.abc import Iterator

from lib.data import BadRow, DataParams, RawPair

FORMS = (
    "Write a haiku about {s}.",
    "Write a six-word story about {s}.",
    "Write a limerick about {s}.",
    "Write the opening line of a novel about {s}.",
    "Write a short poem of four lines about {s}.",
    "Write a one-sentence fable about {s}.",
    "Write a tweet-length joke about {s}.",
    "Write a product slogan inspired by {s}.",
    "Describe {s} to someone who has never seen it, in two sentences.",
    "Write a diary entry of three sentences from the point of view of {s}.",
    "Write a riddle whose answer is {s}.",
    "Write a title and a one-line blurb for a film about {s}.",
)

SUBJECTS = (
    "the first snow of winter",
    "a lighthouse keeper",
    "a lost umbrella",
    "the last day of summer",
    "a robot learning to cook",
    "an old library",
    "a city at 4 a.m.",
    "a cat who owns a bakery",
    "the ocean",
    "a forgotten birthday",
    "a train that never stops",
    "the moon",
)


def prompts() -> list[str]:
    return [form.format(s=subject) for form in FORMS for subject in SUBJECTS]


def load(p: DataParams) -> Iterator[RawPair | BadRow]:
    for n, text in enumerate(prompts()):
        yield RawPair(
            text, None, f"lib/domains/creative.py:prompt {n + 1}", {"form": n // len(SUBJECTS)}
        )
