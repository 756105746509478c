"""`jsonl`: the user's own pairs, `{"input": ..., "output": ...}` a line (e.g. tweets → replies).

Every problem is reported with its file and line: malformed JSON, a missing field, a wrong type,
bytes that are not UTF-8. prepare turns them into counted bad rows, or fails before writing when
there are more than `data.max_bad_fraction` of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lib.data import BadRow, DataError, DataParams, RawPair


def load(p: DataParams) -> Iterator[RawPair | BadRow]:
    path = Path(p.jsonl_path)
    if not path.is_file():
        raise DataError(f"data.jsonl_path: {path} does not exist")
    rows = 0
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            rows += bool(raw.strip())
            src = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRow(src, f"not valid UTF-8 (byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadRow(src, f"malformed JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                yield BadRow(src, f"expected a JSON object, got {type(obj).__name__}")
                continue
            missing = [k for k in ("input", "output") if k not in obj]
            if missing:
                yield BadRow(src, f"missing field(s) {missing}")
                continue
            meta = {k: v for k, v in obj.items() if k not in ("input", "output", "id")}
            rid = obj.get("id")
            yield RawPair(
                obj["input"], obj["output"], src, meta, id=str(rid) if rid is not None else None
            )
    if rows == 0:
        raise DataError(f"data.jsonl_path: {path} is empty (no lines with a JSON object)")
