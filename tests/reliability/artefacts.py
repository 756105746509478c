"""Tiny valid artefacts for every Parquet schema, and drifted copies of them.

A drifted copy is derived from the valid table (one column dropped, one added, or one cast to an
incompatible type), so a stage that rejects it rejects the drift and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lib.io import write_parquet
from lib.schemas import (
    EXAMPLES,
    GENERATIONS,
    JUDGMENTS,
    PAIRS,
    SCORE_METRICS,
    SCORES,
    SYSTEMS,
    Schema,
)

IDS = ("social-a", "social-b")


def pairs_frame() -> pd.DataFrame:
    rows = []
    for i in range(12):
        rows.append(
            {
                "id": f"social-{i:02d}",
                "domain": "social",
                "input": f"Hello there, how was day number {i}?",
                "reference": f"It was fine, day {i} was calm.",
                "group": f"g{i:02d}",
                "meta": "{}",
            }
        )
    return pd.DataFrame(rows)


def examples_frame(split: str) -> pd.DataFrame:
    rows = []
    for i, id_ in enumerate(IDS):
        rows.append(
            {
                "id": id_,
                "domain": "social",
                "input": f"How was your weekend, friend {i}?",
                "reference": "Great, thanks!",
                "group": f"g{i}",
                "meta": "{}",
                "split": split,
                "references": ["Great, thanks!", "Quiet but nice."],
            }
        )
    return pd.DataFrame(rows)


def generations_frame(system: str, n: int = 2) -> pd.DataFrame:
    rows = []
    for id_ in IDS:
        for s in range(n):
            rows.append(
                {
                    "system": system,
                    "id": id_,
                    "sample": s,
                    "domain": "social",
                    "input": f"How was your weekend, {id_}?",
                    "reference": "Great, thanks!",
                    "references": ["Great, thanks!"],
                    "meta": json.dumps({}),
                    "prompt": f"How was your weekend, {id_}?",
                    "output": f"[{system}] reply {s}",
                    "n_tokens": 3,
                    "finish_reason": "eos",
                    "seed": 100 + s,
                }
            )
    return pd.DataFrame(rows)


def scores_frame(system: str) -> pd.DataFrame:
    rows = []
    for j, id_ in enumerate(IDS):
        row = {"system": system, "id": id_, "n_samples": 10, "n_pass": 3 + j}
        row.update({m: 0.25 + 0.1 * j for m in SCORE_METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def judgments_frame() -> pd.DataFrame:
    rows = []
    for opp in ("zero_shot", "few_shot", "baseline", "gem"):
        for id_ in IDS:
            rows.append(
                {
                    "id": id_,
                    "system": "polychromic",
                    "opponent": opp,
                    "sample_system": 0,
                    "sample_opponent": 1,
                    "verdict_first": "A",
                    "verdict_second": "B",
                    "reason_first": "on topic",
                    "reason_second": "on topic",
                    "outcome": "win",
                    "backend": "local",
                    "judge_model": "tiny-random",
                }
            )
    return pd.DataFrame(rows)


def write_valid(path: Path, schema: Schema, df: pd.DataFrame) -> Path:
    write_parquet(df, path, schema)
    return path


# --- drift ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    kind: str  # missing | extra | mistyped | truncated
    column: str | None  # the column the error must name (None for a truncated file)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.column}" if self.column else self.kind


EXTRA = "unexpected_extra_col"


def _incompatible(t: pa.DataType) -> tuple[pa.DataType, object]:
    """A type the schema must refuse for a column of type `t`, and a value of it."""
    if pa.types.is_string(t):
        return pa.int64(), 7
    if pa.types.is_integer(t):
        return pa.string(), "7"
    if pa.types.is_floating(t):
        return pa.string(), "0.5"
    if pa.types.is_list(t):
        return pa.string(), "not a list"
    raise AssertionError(f"no incompatible type chosen for {t}")


def drifts(schema: Schema) -> Iterator[Drift]:
    """Every column missing, every column mistyped, one extra column, a truncated file."""
    for f in schema.arrow:
        yield Drift("missing", f.name)
    yield Drift("extra", EXTRA)
    for f in schema.arrow:
        yield Drift("mistyped", f.name)
    yield Drift("truncated", None)


def write_drifted(valid: Path, drift: Drift, dest: Path) -> Path:
    """Copy the valid artefact at `valid` to `dest` with `drift` applied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if drift.kind == "truncated":  # a half-written file, as a non-atomic writer would leave
        data = valid.read_bytes()
        dest.write_bytes(data[: len(data) // 2])
        return dest
    table = pq.read_table(valid)
    if drift.kind == "missing":
        table = table.drop_columns([drift.column])
    elif drift.kind == "extra":
        table = table.append_column(EXTRA, pa.array(["x"] * table.num_rows))
    elif drift.kind == "mistyped":
        i = table.schema.get_field_index(drift.column)
        t, value = _incompatible(table.schema.field(i).type)
        table = table.set_column(i, drift.column, pa.array([value] * table.num_rows, type=t))
    else:
        raise AssertionError(drift.kind)
    pq.write_table(table, dest)
    return dest


def assert_names_everything(message: str, drift: Drift, path: Path, schema: Schema) -> None:
    assert str(path) in message, f"file not named: {message}"
    if drift.kind == "truncated":
        assert "not a readable Parquet file" in message, message
        return
    assert f"'{drift.column}'" in message, f"column {drift.column} not named: {message}"
    assert f"stage '{schema.producer}'" in message, f"producer not named: {message}"


SCHEMA_OF = {
    "pairs": PAIRS,
    "examples": EXAMPLES,
    "generations": GENERATIONS,
    "scores": SCORES,
    "judgments": JUDGMENTS,
}

__all__ = ["SYSTEMS"]
