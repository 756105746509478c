"""Property-based bad-input tests for the `jsonl` source and `prepare`: every input either becomes
clean rows, counted bad rows naming file:line, or a DataError naming file and line — never another
exception, never a half-written output."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.config import merged_params, params_for
from lib.data import DataError, RawPair, prepare_pairs
from lib.domains import load_domain

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)
good_line = st.builds(
    lambda i, o: json.dumps({"input": i, "output": o}, ensure_ascii=False).encode(),
    st.text(min_size=0, max_size=80),
    st.text(min_size=0, max_size=80),
)
odd_line = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")),  # random bytes, NULs, bad UTF-8
    good_line.map(lambda b: b[: len(b) // 2]),  # truncated
    st.builds(
        lambda i, o: json.dumps({"input": i, "output": o}).encode(), json_values, json_values
    ),
    st.builds(lambda s: json.dumps({"input": s}).encode(), st.text(max_size=20)),  # missing field
    st.text(max_size=40).map(
        lambda s: ("\ufeff" + s).encode("utf-16", "surrogatepass")[:60].replace(b"\n", b" ")
    ),
    st.just(json.dumps({"input": "x" * 100_000, "output": "y"}).encode()),  # huge field
    st.just(b'{"input": "dup", "output": "same", "id": "A"}'),  # duplicate ids
    st.text(max_size=30).map(lambda s: s.encode("latin-1", "replace").replace(b"\n", b" ")),
)
lines_strategy = st.lists(st.one_of(good_line, odd_line), min_size=1, max_size=25)

_SOURCE = re.compile(r".+\.jsonl:\d+: ")


@SETTINGS
@given(lines=lines_strategy, bad_fraction=st.sampled_from([0.0, 0.2, 1.0]))
def test_jsonl_never_crashes_and_names_lines(tmp_path, lines, bad_fraction):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    p = params_for("data", domain="jsonl", jsonl_path=str(path), max_bad_fraction=bad_fraction)
    try:
        df, report = prepare_pairs(load_domain(p), p, 0)
    except DataError as e:
        msg = str(e)
        assert "no usable rows" in msg or re.search(r"in\.jsonl(:\d+| is empty)", msg), msg
        return
    assert report["rows_read"] >= len(df) + report["bad_rows"]
    assert all(_SOURCE.match(x) for x in report["bad_row_examples"])
    assert df["id"].is_unique
    for col in ("input", "reference"):
        assert all(isinstance(v, str) and v == v.strip() and "\x00" not in v for v in df[col])


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.text(max_size=60), st.integers(), st.none()),
            st.one_of(st.text(max_size=60), st.none(), st.lists(st.text(), max_size=2)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_prepare_on_arbitrary_records(rows):
    raws = [RawPair(i, o, f"mem:{n}") for n, (i, o) in enumerate(rows)]
    p = params_for("data", max_bad_fraction=1.0)
    try:
        df, report = prepare_pairs(raws, p, 0)
    except DataError as e:
        assert "no usable rows" in str(e)
        return
    kept_or_dropped = len(df) + report["bad_rows"] + sum(report["dropped_by_reason"].values())
    assert kept_or_dropped == len(rows)  # every row accounted for


@SETTINGS
@given(lines=lines_strategy)
def test_prepare_stage_writes_all_or_nothing(tmp_path, lines):
    from stages import prepare

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    params = tmp_path / "params.yaml"
    data = {"domain": "jsonl", "jsonl_path": str(src), "max_bad_fraction": 0.3}
    params.write_text(yaml.safe_dump(merged_params({"seed": 1, "data": data})))
    out, rep = tmp_path / "o" / "pairs.parquet", tmp_path / "o" / "data.json"
    for f in (out, rep):
        f.unlink(missing_ok=True)
    try:
        prepare.main(["--out", str(out), "--report", str(rep), "--params", str(params)])
    except DataError:
        assert not out.exists() and not rep.exists()
    else:
        assert len(pd.read_parquet(out)) == json.loads(rep.read_text())["rows_kept"]
    leftovers = [p.name for p in (tmp_path / "o").glob(".*")] if (tmp_path / "o").exists() else []
    assert leftovers == []


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1", "cp1252"])
def test_whole_file_in_wrong_encoding_fails_with_line(tmp_path, encoding):
    path = tmp_path / "in.jsonl"
    text = "\n".join(
        json.dumps({"input": f"café número {i}", "output": "olé"}, ensure_ascii=False)
        for i in range(5)
    )
    path.write_bytes(text.encode(encoding))
    p = params_for("data", domain="jsonl", jsonl_path=str(path))
    with pytest.raises(DataError, match=r"in\.jsonl:1: "):
        prepare_pairs(load_domain(p), p, 0)
