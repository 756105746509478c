"""Stage score: a hand-made generations file in, per-prompt scores and metrics JSON out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from lib import checkers, metrics
from lib.config import merged_params, params_for
from lib.embed import embed
from lib.io import write_parquet
from lib.schemas import EXAMPLES, GENERATIONS, SCORE_METRICS, SCORES
from stages import score

CODE_META = {
    "task_id": "HumanEval/0",
    "prompt": 'def add(a, b):\n    """Add."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}
SOCIAL_REFS = ["I'm doing great, thanks!", "Pretty good, you?", "Not bad at all."]


def _gens() -> pd.DataFrame:
    rows = []

    def add(id_, domain, outputs, reference, references, meta="{}"):
        for s, out in enumerate(outputs):
            rows.append(
                {
                    "system": "baseline",
                    "id": id_,
                    "sample": s,
                    "domain": domain,
                    "input": f"input of {id_}",
                    "reference": reference,
                    "references": references,
                    "meta": meta,
                    "prompt": f"prompt of {id_}",
                    "output": out,
                    "n_tokens": len(out.split()),
                    "finish_reason": "eos",
                    "seed": 100 + s,
                }
            )

    # q1: 3 of 10 samples contain the answer; q2: none does
    add(
        "q1",
        "qa",
        ["Paris is the capital."] * 3 + [f"maybe city {i}" for i in range(7)],
        "Paris",
        ["Paris"],
    )
    add("q2", "qa", [f"I think {i} or so" for i in range(10)], "Neptune", ["Neptune"])
    # c1: 4 of 10 completions are correct, one loops forever
    bodies = ["    return a + b\n"] * 4 + ["    return a - b\n"] * 5 + ["    while True: pass\n"]
    add("c1", "code", bodies, "    return a + b\n", ["    return a + b\n"], json.dumps(CODE_META))
    # s1: social, first reference "I'm doing great, thanks!"
    outs = ["I'm doing great, thanks!", "Great, thank you!", "The weather is cold."] + [
        f"Random reply number {i} about trains" for i in range(7)
    ]
    add("s1", "social", outs, SOCIAL_REFS[0], SOCIAL_REFS)
    # w1: creative, no reference, no checker
    add("w1", "creative", [f"A poem about the sea, take {i}" for i in range(10)], None, [])
    return pd.DataFrame(rows)


def _val() -> pd.DataFrame:
    refs = [
        [
            "How are you?",
            "I'm fine",
            "Doing well, thank you",
            "Fine and you?",
            "Terrible day honestly",
        ],
        ["What's up?", "Not much", "Nothing much, you?"],
        [
            "Single",
        ],
    ]
    return pd.DataFrame(
        {
            "id": [f"v{i}" for i in range(3)],
            "domain": "social",
            "input": [f"in {i}" for i in range(3)],
            "reference": [r[0] for r in refs],
            "group": [f"g{i}" for i in range(3)],
            "meta": "{}",
            "split": "val",
            "references": refs,
        }
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score")
    params = {
        "score": {
            "code_timeout_s": 2,
            "code_memory_mb": 512,
            "code_workers": 2,
            "qa_f1_threshold": 0.5,
            "social_human_pass_rate": 0.5,
            "eval_encoder": None,
            "bertscore_layer": 6,
        }
    }
    (tmp / "params.yaml").write_text(yaml.safe_dump(merged_params(params)))
    write_parquet(_gens(), tmp / "gens.parquet", GENERATIONS)
    write_parquet(_val(), tmp / "val.parquet", EXAMPLES)
    score.main(
        [
            "--system",
            "baseline",
            "--generations",
            str(tmp / "gens.parquet"),
            "--val",
            str(tmp / "val.parquet"),
            "--out",
            str(tmp / "scores.parquet"),
            "--metrics",
            str(tmp / "m.json"),
            "--params",
            str(tmp / "params.yaml"),
        ]
    )
    table = pq.read_table(tmp / "scores.parquet")
    return table, json.loads((tmp / "m.json").read_text())


def test_schema_and_one_row_per_id(scored):
    table, _ = scored
    assert table.schema.equals(SCORES.arrow)
    df = table.to_pandas().set_index("id")
    assert sorted(df.index) == ["c1", "q1", "q2", "s1", "w1"]
    assert (df["n_samples"] == 10).all() and (df["system"] == "baseline").all()


def test_pass_at_k_per_domain(scored):
    df = scored[0].to_pandas().set_index("id")
    assert df.loc["q1", "n_pass"] == 3
    assert df.loc["q1", "pass_at_1"] == pytest.approx(0.3)
    assert df.loc["q1", "pass_at_2"] == pytest.approx(metrics.pass_at_k(10, 3, 2))
    assert df.loc["q1", "pass_at_10"] == 1.0
    assert df.loc["q2", "n_pass"] == 0 and df.loc["q2", "pass_at_10"] == 0.0
    assert df.loc["c1", "n_pass"] == 4  # the looping sample timed out and failed
    assert df.loc["c1", "pass_at_1"] == pytest.approx(0.4)
    # creative: no checker, missing — never 0
    assert pd.isna(df.loc["w1", "n_pass"])
    assert df.loc["w1", [f"pass_at_{k}" for k in range(1, 11)]].isna().all()


def test_social_checker_uses_calibrated_tau(scored):
    df, m = scored[0].to_pandas().set_index("id"), scored[1]
    val = _val()
    tau, n_pairs = checkers.social_tau(val["references"].tolist(), 0.5, embed, "val")
    assert m["social_tau"] == pytest.approx(tau, abs=1e-6)
    assert m["social_tau_n_pairs"] == n_pairs == 6
    outs = _gens().query("id == 's1'")["output"].tolist()
    e, r = embed(outs), embed([SOCIAL_REFS[0]])[0]
    want = int(((e @ r) >= tau).sum())
    assert df.loc["s1", "n_pass"] == want
    assert 1 <= want <= 9  # the identical reply passes, unrelated trains do not


def test_diversity_and_quality_values(scored):
    df = scored[0].to_pandas().set_index("id")
    gens = _gens()
    for id_ in ["q1", "q2", "c1", "s1", "w1"]:
        texts = gens.query("id == @id_")["output"].tolist()
        assert df.loc[id_, "self_bleu"] == pytest.approx(metrics.self_bleu_naive(texts), abs=1e-9)
        assert df.loc[id_, "distinct_2"] == pytest.approx(metrics.distinct_n(texts, 2))
        assert df.loc[id_, "distinct_1_li"] == pytest.approx(metrics.distinct_n_li(texts, 1))
        assert df.loc[id_, "semantic_diversity"] == pytest.approx(
            metrics.semantic_diversity(embed(texts)), abs=1e-5
        )
        assert df.loc[id_, "mean_length"] == pytest.approx(np.mean([len(t.split()) for t in texts]))
    q1 = gens.query("id == 'q1'")["output"].tolist()
    assert df.loc["q1", "rouge_l"] == pytest.approx(
        np.mean([metrics.rouge_l(t, ["Paris"]) for t in q1])
    )
    # the eval encoder is not set → missing; creative has no reference → missing
    assert df["semantic_diversity_eval"].isna().all()
    assert np.isnan(df.loc["w1", "rouge_l"]) and np.isnan(df.loc["w1", "bertscore_f1"])
    assert 0 < df.loc["s1", "bertscore_f1"] <= 1


def test_metrics_json(scored):
    table, m = scored
    df = table.to_pandas()
    assert m["system"] == "baseline" and m["n_prompts"] == 5
    assert set(m["mean"]) == set(SCORE_METRICS)
    assert m["mean"]["pass_at_1"] == pytest.approx(
        np.mean([0.3, 0.0, 0.4, df.set_index("id").loc["s1", "pass_at_1"]])
    )
    assert m["n_prompts_with"]["pass_at_1"] == 4
    assert m["mean"]["semantic_diversity_eval"] is None
    assert m["bertscore"]["model"] == "all-MiniLM-L6-v2" and m["bertscore"]["layer"] == 6
    assert m["bertscore"]["hash"].startswith("all-MiniLM-L6-v2_L6_no-idf")
    assert m["checker"]["creative"] is None and m["checker"]["code"] == "humaneval-tests-in-sandbox"


def test_wrong_system_and_missing_val_refs_fail(tmp_path):
    from lib.scoring import score_generations

    gens = _gens()
    with pytest.raises(ValueError, match="expected 'gem'"):
        score_generations(gens, _val(), params_for("score"), "gem")
    lonely = _val().assign(references=[["a"], ["b"], ["c"]])
    with pytest.raises(ValueError, match="my/val.parquet"):
        score_generations(
            gens[gens["domain"] == "social"],
            lonely,
            params_for("score"),
            "baseline",
            val_where="my/val.parquet",
        )
