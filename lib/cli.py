"""How a stage ends on a known problem: one line on stderr, the traceback in a log file, exit 1.

Every stage's `if __name__ == "__main__": run(main)`. The project's own errors (bad params, a
schema mismatch, bad data, a model that cannot be loaded, a judge failure) are the user's to fix,
and the message says how; their traceback only hides it, so it goes to `.cache/logs/<stage>.log`.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# "module:Class" of every error a user can fix from its message. Looked up only in modules the
# stage has already imported, so this file imports nothing heavy.
EXPECTED_ERRORS = (
    "lib.config:ParamsError",
    "lib.io:SchemaError",
    "lib.schemas:SchemaError",
    "lib.data:DataError",
    "lib.models:ModelError",
    "lib.judge.anthropic_backend:JudgeError",
    "lib.judge.anthropic_backend:JudgeIncomplete",  # a subclass of JudgeError: listed for the reader
)

LOG_DIR = Path(".cache/logs")


def expected_errors() -> tuple[type[BaseException], ...]:
    found = []
    for spec in EXPECTED_ERRORS:
        module, _, name = spec.partition(":")
        if module in sys.modules:
            cls = getattr(importlib.import_module(module), name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def run(main: Callable[[], Any], stage: str | None = None) -> None:
    """Call `main()`; a project error becomes one line plus a log path and exit status 1."""
    if stage is None:
        stage = Path(sys.argv[0]).stem
        if "--system" in sys.argv[:-1]:  # generate@<system>, score@<system>
            stage += "@" + sys.argv[sys.argv.index("--system") + 1]
    try:
        main()
    except Exception as e:
        if not isinstance(e, expected_errors()):
            raise
        log = LOG_DIR / f"{stage}.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(sys.argv)}\n")
                fh.write(traceback.format_exc())
            where = f" (traceback: {log})"
        except OSError:
            where = ""
        line = " ".join(str(e).split()) or type(e).__name__
        print(f"{stage}: error: {line}{where}", file=sys.stderr)
        sys.exit(1)
