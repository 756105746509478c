"""Schema drift at the stage level: every stage that reads Parquet refuses a drifted input.

For each (stage, Parquet input) pair, each input is derived from a valid artefact with one column
missing (every column in turn), one extra column, one column of an incompatible type (every column
in turn) or the file cut in half. The stage's `main` must raise `SchemaError` naming the column,
the file and the stage that produces that artefact, and must write none of its outputs.
"""

from __future__ import annotations

import pytest

from lib.io import SchemaError, read_parquet
from tests.reliability import artefacts as A
from tests.reliability.stage_inputs import CASES, smoke_params

DRIFT_CASES = [
    pytest.param(case, drift, id=f"{case.id}-{drift.label}")
    for case in CASES
    for drift in A.drifts(case.schema)
]


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return smoke_params(tmp_path_factory.mktemp("params") / "params.yaml")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_valid_inputs_pass_the_read_check(case, params, tmp_path):
    # The positive control: the undrifted inputs are accepted, so a failure below is the drift.
    _, target, _ = case.build(tmp_path, params)
    assert len(read_parquet(target, case.schema)) > 0


@pytest.mark.parametrize("case, drift", DRIFT_CASES)
def test_stage_refuses_drifted_input(case, drift, params, tmp_path):
    argv, target, outputs = case.build(tmp_path, params)
    valid = target.with_name(target.name + ".valid")
    target.rename(valid)
    A.write_drifted(valid, drift, target)
    with pytest.raises(SchemaError) as err:
        case.main()(argv)
    A.assert_names_everything(str(err.value), drift, target, case.schema)
    for out in outputs:
        assert not out.exists(), f"{case.id}: {out} written despite a bad input"
    assert not list(tmp_path.rglob("*.tmp")), "temp files left behind"
