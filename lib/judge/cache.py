"""Content-addressed, on-disk cache of judge answers: one JSON file per answer, written atomically.

The key is the sha256 of everything that determines the answer (backend, model, prompt, sampling
parameters, attempt number), so a rerun or a resumed run never pays for an answer twice and a
changed prompt or model never reuses a stale one. Nothing secret goes into a key or a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lib.io import atomic_path


def cache_key(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Writes are atomic, so a bad file was damaged outside this code: ask again.
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.root is None:
            return
        with atomic_path(self._path(key)) as tmp:
            tmp.write_text(json.dumps(value, sort_keys=True, ensure_ascii=False), encoding="utf-8")
