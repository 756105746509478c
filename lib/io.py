"""Atomic writes and schema-checked reads: a stage either leaves a complete output or none."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lib.schemas import Schema, SchemaError  # SchemaError lives beside the schemas it checks

STALE_TMP_S = 3600.0  # a temp sibling older than this belongs to a writer that was killed


def _sweep_stale(path: Path) -> None:
    """Delete temp siblings of `path` left by a SIGKILLed writer (never inside an output, but they
    pile up). Young ones are left alone: they may belong to a writer still running."""
    now = time.time()
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - old.lstat().st_mtime < STALE_TMP_S:
                continue
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        except OSError:
            continue  # another process swept it first


@contextlib.contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it into place, on error delete it.

    The sibling lives in the same directory so the final `os.replace` is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(path)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o644)
    try:
        yield tmp
        if is_dir:
            # A directory cannot replace a non-empty directory atomically: move the old one
            # aside first, so a crash leaves either the old complete version or the new one.
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old.tmp")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_parquet(df: pd.DataFrame, path: str | Path, schema: Schema) -> None:
    """Validate `df` against `schema` and write it atomically."""
    table = schema.to_table(df, where=str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | Path, schema: Schema) -> pd.DataFrame:
    """Read a Parquet artefact and check it against `schema`, naming the file and column on error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: input artefact is missing (did its stage run?)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{path}: not a readable Parquet file: {e}") from e
    schema.check(table.schema, where=str(path))
    return table.to_pandas()


def json_ready(obj: Any) -> Any:
    """NaN/inf become null: a metric that could not be computed is missing, never a number."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()  # numpy scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (sorted keys, so DVC metrics diffs stay stable)."""
    with atomic_path(path) as tmp:
        text = json.dumps(json_ready(obj), indent=2, sort_keys=True, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
