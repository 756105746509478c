"""Prompt templates of the base-model systems (zero_shot, few_shot), per domain, in one place.

A researcher changes a prompt in `params.yaml` (`prompts:` section: per-domain overrides of the
defaults below) or here; DVC then regenerates only the systems whose prompts changed. The adapter
systems (baseline, gem, polychromic) are prompted exactly as they were trained: the raw input in
`lib.chat.chat_prompt_ids`, no instruction.

Placeholders are literal `{input}`, `{output}` and `{examples}`; every other brace is kept as is
(code and JSON prompts contain braces). A template without its required placeholders, or an
override for an unknown domain, fails with ValueError.

Few-shot: `few_shot_k` train examples per domain, chosen once from the global seed (the same
examples for every test input), each rendered with `few_shot_example`, joined by blank lines into
`{examples}`. Examples need a reference, so a domain without references (`creative`) cannot have
a few-shot prompt.

Code (HumanEval) with a chat model: the model is asked for the whole function in a fenced block
and `extract_code_body` recovers the body the harness expects (program = prompt + body + test).
With a tokenizer that has no chat template the prompt is the raw HumanEval prompt (after the
few-shot examples as whole functions) and the output is its raw continuation, cut at HumanEval's
stop sequences; the `code` templates below then do not apply.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from lib.config import param

ZERO_SHOT: Mapping[str, str] = MappingProxyType(
    {
        "social": "Write a short, natural reply to this message.\n\nMessage: {input}",
        "qa": "Answer this question briefly.\n\nQuestion: {input}",
        "creative": "Write a short piece of creative writing for this prompt.\n\n{input}",
        "code": (
            "Complete the following Python function. Reply with the whole function in a single "
            "```python code block.\n\n```python\n{input}```"
        ),
        "jsonl": "Write a response to this input.\n\n{input}",
    }
)

FEW_SHOT: Mapping[str, str] = MappingProxyType(
    {
        "social": (
            "Here are some messages and replies.\n\n{examples}\n\n"
            "Write a short, natural reply to this message.\n\nMessage: {input}"
        ),
        "qa": (
            "Here are some questions and answers.\n\n{examples}\n\n"
            "Answer this question briefly.\n\nQuestion: {input}"
        ),
        "creative": (
            "Here are some prompts and pieces written for them.\n\n{examples}\n\n"
            "Write a short piece of creative writing for this prompt.\n\n{input}"
        ),
        "code": (
            "Here are some completed Python functions.\n\n{examples}\n\n"
            "Complete the following Python function. Reply with the whole function in a single "
            "```python code block.\n\n```python\n{input}```"
        ),
        "jsonl": "Here are some examples.\n\n{examples}\n\nWrite a response to this input.\n\n{input}",
    }
)

FEW_SHOT_EXAMPLE: Mapping[str, str] = MappingProxyType(
    {
        "social": "Message: {input}\nReply: {output}",
        "qa": "Question: {input}\nAnswer: {output}",
        "creative": "Prompt: {input}\nWriting: {output}",
        "code": "```python\n{input}{output}```",
        "jsonl": "Input: {input}\nOutput: {output}",
    }
)

DOMAINS = tuple(ZERO_SHOT)
_REQUIRED = {
    "zero_shot": ("{input}",),
    "few_shot": ("{examples}", "{input}"),
    "few_shot_example": ("{input}", "{output}"),
}
_PLACEHOLDER = re.compile(r"\{(input|output|examples)\}")

# HumanEval's stop sequences (Chen et al. 2021): a top-level line that ends the function.
CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


@dataclass(frozen=True)
class PromptParams:
    """`prompts:` in params.yaml: per-domain overrides of ZERO_SHOT, FEW_SHOT, FEW_SHOT_EXAMPLE."""

    zero_shot: dict[str, str] = param()
    few_shot: dict[str, str] = param()
    few_shot_example: dict[str, str] = param()


def fill(template: str, **values: str) -> str:
    """Substitute `{input}`, `{output}`, `{examples}` in one pass; other braces stay."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Templates:
    zero_shot: Mapping[str, str]
    few_shot: Mapping[str, str]
    few_shot_example: Mapping[str, str]

    def get(self, kind: str, domain: str) -> str:
        table = getattr(self, kind)
        if domain not in table:
            raise ValueError(
                f"no {kind} prompt template for domain '{domain}'; known: {sorted(table)}"
            )
        return table[domain]


def templates(p: PromptParams) -> Templates:
    """Defaults with `p`'s overrides applied, checked: known domains, required placeholders."""
    merged = {}
    for kind, defaults in (
        ("zero_shot", ZERO_SHOT),
        ("few_shot", FEW_SHOT),
        ("few_shot_example", FEW_SHOT_EXAMPLE),
    ):
        overrides = dict(getattr(p, kind) or {})
        unknown = sorted(set(overrides) - set(DOMAINS))
        if unknown:
            raise ValueError(f"prompts.{kind}: unknown domain(s) {unknown}; known: {list(DOMAINS)}")
        table = {**defaults, **overrides}
        for domain, tpl in table.items():
            if not isinstance(tpl, str):
                raise ValueError(f"prompts.{kind}.{domain}: template must be a string")
            missing = [ph for ph in _REQUIRED[kind] if ph not in tpl]
            if missing:
                raise ValueError(
                    f"prompts.{kind}.{domain}: template lacks placeholder(s) {missing}: {tpl!r}"
                )
        merged[kind] = MappingProxyType(table)
    return Templates(**merged)


def stable_int(*parts: object, bits: int = 63) -> int:
    """A non-negative integer from `parts`, the same on every run, platform and Python version."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> (64 - bits)


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def choose_few_shot(
    train: pd.DataFrame, domain: str, k: int, seed: int, exclude_inputs: Sequence[str]
) -> list[tuple[str, str]]:
    """k (input, reference) train pairs of `domain`, chosen from `seed` alone.

    Candidates are ordered by id (so parquet row order does not matter), rows without a reference
    or whose input is also a test input are left out, and k distinct inputs are drawn.
    """
    if k < 1:
        raise ValueError(f"generate.few_shot_k must be >= 1, got {k}")
    banned = {_norm(t) for t in exclude_inputs}
    rows = train[(train["domain"] == domain) & train["reference"].notna()].sort_values("id")
    rows = rows[~rows["input"].map(_norm).isin(banned)].drop_duplicates("input")
    if len(rows) < k:
        raise ValueError(
            f"few_shot: domain '{domain}' has {len(rows)} usable train example(s) with a reference, "
            f"needs {k} (a domain without references, like creative, has no few-shot prompt)"
        )
    rng = np.random.default_rng(stable_int(seed, "few_shot", domain))
    picked = rng.choice(len(rows), size=k, replace=False)
    chosen = [(str(rows["input"].iloc[i]), str(rows["reference"].iloc[i])) for i in picked]
    leaked = [inp for inp, _ in chosen if _norm(inp) in banned]
    assert not leaked, f"few-shot example is a test input: {leaked[0]!r}"
    return chosen


def few_shot_text(t: Templates, domain: str, examples: Sequence[tuple[str, str]], inp: str) -> str:
    shots = "\n\n".join(
        fill(t.get("few_shot_example", domain), input=i, output=o) for i, o in examples
    )
    return fill(t.get("few_shot", domain), examples=shots, input=inp)


def raw_code_prompt(examples: Sequence[tuple[str, str]], inp: str) -> str:
    """Base-model code prompt: the examples as whole functions, then the prompt to continue."""
    return "".join(f"{i}{o.rstrip()}\n\n\n" for i, o in examples) + inp


# -- code extraction --------------------------------------------------------------------------

FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def truncate_at_stops(text: str, stops: Sequence[str] = CODE_STOPS) -> str:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _skip_docstring(lines: list[str], start: int) -> int:
    """Index of the first line after a docstring that begins at or after `start` (blank lines skipped)."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines):
        return start
    s = lines[i].strip()
    for q in ('"""', "'''"):
        for prefix in ("", "r", "R", "u", "U"):
            if s.startswith(prefix + q):
                rest = s[len(prefix) + 3 :]
                if q in rest:
                    return i + 1
                for j in range(i + 1, len(lines)):
                    if q in lines[j]:
                        return j + 1
                return len(lines)
    return start


def _function_body(code: str, entry_point: str) -> str | None:
    """The body of `def entry_point` in `code` (signature and docstring removed), or None."""
    lines = code.split("\n")
    pat = re.compile(rf"^(\s*)(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(")
    for n, line in enumerate(lines):
        m = pat.match(line)
        if not m:
            continue
        indent = len(m.group(1).expandtabs())
        # The signature may span lines: it ends at the first line whose code ends with ':'.
        end = n
        while end < len(lines) and not lines[end].split("#")[0].rstrip().endswith(":"):
            end += 1
        start = _skip_docstring(lines, end + 1)
        body = []
        for line2 in lines[start:]:
            if line2.strip() and len(line2) - len(line2.lstrip()) <= indent:
                break  # dedent: the function is over
            body.append(line2)
        return "\n".join(body).rstrip() + "\n"
    return None


def _bare_body(code: str) -> str:
    """A body written without its `def` line: cut where it ends, re-indented by four spaces."""
    code = truncate_at_stops("\n" + code.strip("\n"))[1:]
    lines = code.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    d = len(first) - len(first.lstrip())
    body = []
    for ln in lines:
        if ln.strip() and d > 0 and len(ln) - len(ln.lstrip()) < d:
            break  # back below the body's indentation (prose, a call): the function is over
        body.append(("    " + ln[d:]) if ln.strip() else "")
    return "\n".join(body).rstrip() + "\n"


def extract_code_body(text: str, entry_point: str) -> str:
    """The function-body continuation HumanEval executes as `prompt + body + test`.

    Accepts what models write: a fenced ```python block (the first one, or the one defining
    `entry_point`) holding the whole function (signature and docstring re-stated: removed) or
    just its body; or an unfenced function or body. A body written without indentation is
    indented by four spaces. Text after the function (prose, usage examples, a __main__ block)
    is cut at the function's end or at HumanEval's stop sequences.
    """
    blocks = FENCE.findall(text)
    if blocks:
        defining = [b for b in blocks if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", b)]
        code = (defining or blocks)[0]
    else:
        code = text
    body = _function_body(code, entry_point)
    return _bare_body(code) if body is None else body
