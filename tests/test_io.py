import os
import time

import pandas as pd
import pytest

from lib.io import STALE_TMP_S, SchemaError, atomic_path, read_parquet, write_json, write_parquet
from lib.schemas import PAIRS


def _pairs(n=2):
    return pd.DataFrame(
        {
            "id": [f"x{i}" for i in range(n)],
            "domain": "qa",
            "input": ["q"] * n,
            "reference": ["a"] * n,
            "group": ["g"] * n,
            "meta": ["{}"] * n,
        }
    )


def test_roundtrip(tmp_path):
    write_parquet(_pairs(), tmp_path / "p.parquet", PAIRS)
    assert read_parquet(tmp_path / "p.parquet", PAIRS).equals(_pairs())


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.drop(columns=["group"]), "missing column(s) ['group']"),
        (lambda d: d.assign(extra=1), "unexpected column(s) ['extra']"),
        (lambda d: d.assign(input=[1, 2]), "column 'input' has type int64"),
    ],
)
def test_schema_drift_names_column_file_and_producer(tmp_path, mutate, needle):
    path = tmp_path / "bad.parquet"
    mutate(_pairs()).to_parquet(path)
    with pytest.raises(SchemaError) as e:
        read_parquet(path, PAIRS)
    assert needle in str(e.value) and str(path) in str(e.value) and "'prepare'" in str(e.value)


def test_null_in_required_column_names_row(tmp_path):
    d = _pairs(3)
    d.loc[2, "input"] = None
    with pytest.raises(SchemaError, match="column 'input' is null at row 2"):
        write_parquet(d, tmp_path / "p.parquet", PAIRS)
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_previous_version(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("x")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "new.bin").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new.bin"]


def test_json_nan_becomes_null(tmp_path):
    write_json({"a": float("nan"), "b": 1.5}, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text().replace(" ", "").replace(
        "\n", ""
    ) == '{"a":null,"b":1.5}'


def test_stale_temp_siblings_of_killed_writers_are_swept_young_ones_kept(tmp_path):
    target = tmp_path / "out.parquet"
    stale_file = tmp_path / ".out.parquet.abc123.tmp"
    stale_dir = tmp_path / ".out.parquet.def456.tmp"
    young = tmp_path / ".out.parquet.ghi789.tmp"
    other = tmp_path / ".other.parquet.jkl000.tmp"  # another output's temp: not ours to touch
    stale_file.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "part").write_text("partial")
    young.write_text("a writer still running")
    other.write_text("partial")
    old = time.time() - 2 * STALE_TMP_S
    for p in (stale_file, stale_dir, other):
        os.utime(p, (old, old))
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert not stale_file.exists() and not stale_dir.exists()
    assert young.exists() and other.exists()
