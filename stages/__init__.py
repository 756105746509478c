"""Pipeline stages, each `python -m stages.<name>` (dvc.yaml).

Same inputs, same bytes: Python salts str hashes per process, so the iteration order of a set of
strings changes from run to run. bert_score, for one, dedups its sentences through a set and then
batches them by length, so each run pads batches differently and BERTScore moves in the 8th
digit (and, through the training reward, an adapter's bytes). A stage started as
`python -m stages.<name>` therefore re-executes itself once, before any import, with
PYTHONHASHSEED=0.
"""

from __future__ import annotations

import os
import sys

HASH_SEED = "0"


def hash_seed_reexec(argv: list[str], environ: dict[str, str]) -> list[str] | None:
    """The command line to re-execute with PYTHONHASHSEED fixed, or None when there is nothing
    to do (already fixed, or this process is not `python [flags] -m stages[.<name>] ...`)."""
    if environ.get("PYTHONHASHSEED") == HASH_SEED:
        return None
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-m", "-c", "-"):
        i += 2 if argv[i] in ("-X", "-W", "-Q") else 1  # interpreter options before -m
    if i + 1 >= len(argv) or argv[i] != "-m":
        return None
    name = argv[i + 1]
    return argv[1:] if name == "stages" or name.startswith("stages.") else None


_again = hash_seed_reexec(list(getattr(sys, "orig_argv", [])), dict(os.environ))
if _again is not None:
    os.execve(
        sys.executable, [sys.executable, *_again], {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    )
