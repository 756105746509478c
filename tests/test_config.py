"""params.yaml is checked at once, in one place: types, ranges, relations, unknown and missing keys.

The bad values below are the ones a new user tried (issue 17): each used to pass silently (or, for
`lambda_`, to train with a value `dvc exp show` did not report).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from lib.config import (
    SECTIONS,
    ParamsError,
    deep_merge,
    load_section,
    merged_params,
    params_for,
    read_params,
    section_class,
    validate_all,
)

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _with(tmp_path: Path, section: str, key: str, value) -> Path:
    return _write(tmp_path, merged_params({section: {key: value}}))


# (section, key, value, what the one-line error must say after "<file>: section.key = value: ")
BAD = [
    ("train", "lr", -1, r"accepted: x > 0"),
    ("lora", "r", 0, r"accepted: x >= 1"),
    ("lora", "dropout", 1.5, r"accepted: 0 <= x < 1"),
    ("train", "batch_size", 0, r"accepted: x >= 1"),
    ("data", "near_dup_jaccard", 1.5, r"accepted: 0 < x <= 1"),
    ("data", "max_pairs", 0, r"accepted: x >= 1"),
    ("split", "max_test", 0, r"accepted: x >= 1"),
    ("judge", "samples_per_input", 0, r"accepted: x >= 1"),
    ("model", "dtype", "float64", r"accepted: auto \| float32 \| bfloat16 \| float16"),
    ("model", "device", "gpu", r"accepted: auto \| cpu \| cuda \| cuda:N"),
    ("loss", "num_samples", 1, r"accepted: x >= 2"),
    ("generate", "max_new_tokens", {"social": 0}, r"accepted: x >= 1"),
    ("gem", "beta", 0, r"accepted: 0 < x <= 1"),
    ("stats", "alpha", 1.0, r"accepted: 0 < x < 1"),
    ("stats", "power", 1.0, r"accepted: 0 < x < 1"),
    ("lora", "r", "16", r"expected an integer"),
    ("train", "seed", -1, r"accepted: x >= 0"),
    ("train", "seed", 1.5, r"accepted: int \| null"),
]


@pytest.mark.parametrize("section, key, value, accepted", BAD)
def test_out_of_range_fails_in_one_line_naming_file_key_value_range(
    tmp_path, section, key, value, accepted
):
    path = _with(tmp_path, section, key, value)
    with pytest.raises(ParamsError) as e:
        validate_all(path)
    msg = str(e.value)
    assert "\n" not in msg
    shown = f"{section}.{key}" + (".social" if isinstance(value, dict) else "")
    assert msg.startswith(f"{path}: {shown} = "), msg
    assert repr(value if not isinstance(value, dict) else 0) in msg
    assert re.search(accepted, msg), msg


def test_alias_key_is_unknown_and_the_real_one_suggested(tmp_path):
    # The bug: `lambda_` was read as an alias of `lambda`, so this trained with 0.3 while the
    # params DVC tracks (and `dvc exp show` reports) said 1.0.
    params = read_params(ROOT / "params.yaml")
    params["loss"]["lambda_"] = 0.3
    path = _write(tmp_path, params)
    with pytest.raises(
        ParamsError, match=rf"^{path}: loss.lambda_ = 0.3: unknown key \(did you mean 'lambda'\?"
    ):
        load_section(section_class("loss"), "loss", path)


def test_unknown_top_level_section_fails(tmp_path):
    path = _write(tmp_path, merged_params({"los": {"lambda": 0.3}}))
    with pytest.raises(ParamsError, match=r"unknown top-level key\(s\) \['los'\]"):
        validate_all(path)


def test_yaml11_scientific_notation_is_read_as_the_number(tmp_path):
    path = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.0002", "  lr: 2e-4")
    assert "lr: 2e-4" in text
    path.write_text(text)
    assert yaml.safe_load(text)["train"]["lr"] == "2e-4"  # what YAML 1.1 gives the code
    assert load_section(section_class("train"), "train", path).lr == pytest.approx(2e-4)


@pytest.mark.parametrize(
    "section, key",
    [(s, k) for s in SECTIONS for k in read_params(ROOT / "params.yaml")[s]],
)
def test_every_missing_key_fails_naming_key_and_file(tmp_path, section, key):
    params = read_params(ROOT / "params.yaml")
    del params[section][key]
    path = _write(tmp_path, params)
    with pytest.raises(ParamsError, match=rf"^{path}: {section}\.{key} is missing"):
        load_section(section_class(section), section, path)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_no_section_dataclass_carries_a_default(section):
    cls = section_class(section)
    with_default = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == [], f"{cls.__name__} duplicates params.yaml: {with_default}"


@pytest.mark.parametrize(
    "overrides, msg",
    [
        ({"split": {"train": 0.9}}, r"split\.train \+ val \+ test = 0\.9 \+ 0\.1 \+ 0\.1 = 1\.1"),
        ({"split": {"min_test": 30}}, r"split\.min_test = 30 > split\.max_test = 20"),
        (
            {"data": {"min_input_chars": 700}},
            r"data\.min_input_chars = 700 > data\.max_input_chars",
        ),
        ({"judge": {"opponents": ["gem", "gpt"]}}, r"judge\.opponents = \['gem', 'gpt'\]"),
        ({"judge": {"backoff_base_s": 90.0}}, r"judge\.backoff_base_s = 90\.0 > backoff_max_s"),
        # at d = 0 the test already rejects with probability alpha: power <= alpha detects nothing
        ({"stats": {"power": 0.05}}, r"stats\.power = 0\.05 <= stats\.alpha = 0\.05"),
    ],
)
def test_relations_between_keys(tmp_path, overrides, msg):
    path = _write(tmp_path, merged_params(overrides))
    with pytest.raises(ParamsError, match=rf"^{path}: {msg}"):
        validate_all(path)


def test_params_for_follows_params_yaml():
    repo = read_params(ROOT / "params.yaml")
    p = params_for("data", max_pairs=10)
    assert p.max_pairs == 10 and p.near_dup_jaccard == repo["data"]["near_dup_jaccard"]
    with pytest.raises(ParamsError, match="data.max_pairs = 0"):
        params_for("data", max_pairs=0)


def test_result_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        params_for("data").max_pairs = 1  # type: ignore[misc]


def test_deep_merge_keeps_untouched_keys():
    assert deep_merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}}) == {
        "a": {"x": 1, "y": 5},
        "b": 3,
    }


@pytest.mark.parametrize(
    "profiles",
    [
        (),
        ("configs/smoke.yaml",),
        ("configs/smoke.yaml", "configs/smoke-code.yaml"),  # applied in this order
        ("configs/qwen3-8b-qlora.yaml",),
        ("configs/gpu.yaml", "configs/social.yaml"),  # issue 18's GPU runs
        ("configs/gpu.yaml", "configs/code.yaml"),
        ("configs/gpu.yaml", "configs/qa.yaml"),
    ],
)
def test_params_and_every_profile_validate(tmp_path, profiles):
    """A typo in params.yaml or a shipped profile fails here, not minutes into a dvc repro."""
    params = read_params(ROOT / "params.yaml")
    for profile in profiles:
        params = deep_merge(params, read_params(ROOT / profile))
    assert set(params) - {"seed", "eval_split", "launcher"} == set(SECTIONS)
    validate_all(_write(tmp_path, params))


def test_check_params_stage_prints_one_line_and_exits_1(tmp_path):
    path = _with(tmp_path, "lora", "dropout", 1.5)
    out = subprocess.run(
        ["python", "-m", "stages.check_params", "--out", str(tmp_path / "ok.json"), "--params", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"check_params: error: {path}: lora.dropout = 1.5: accepted: 0 <= x < 1"
    )
    assert "(traceback: .cache/logs/check_params.log)" in lines[0]
    assert not (tmp_path / "ok.json").exists()
