"""Stage score: a hand-made generations file in, per-prompt scores and metrics JSON out.

The stage runs with the repository's own params.yaml `score:` section, so these tests check the
defaults users get: evaluation on the held-out encoder (all-mpnet-base-v2), not MiniLM.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from lib import checkers, metrics
from lib.config import merged_params, params_for, read_params
from lib.embed import MINILM, embed, encoder_path, minilm_path
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
    # the repository's params (score: its defaults, the held-out encoder among them)
    (tmp / "params.yaml").write_text(yaml.safe_dump(merged_params({})))
    write_parquet(_gens(), tmp / "gens.parquet", GENERATIONS)
    write_parquet(_val(), tmp / "val.parquet", EXAMPLES)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
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
    return table, json.loads((tmp / "m.json").read_text()), out.getvalue()


def test_the_slow_phases_announce_themselves_with_progress(scored):
    # HumanEval's 1,640 samples a system took ~7 silent minutes a system on 2 cores: each of the
    # encoders, the sandbox and BERTScore now names itself and shows a bar.
    out = scored[2]
    n = _gens()["output"].nunique()  # each distinct text is embedded once
    assert f"score baseline: {n} texts through all-mpnet-base-v2" in out
    assert f"score baseline: {n} texts through all-MiniLM-L6-v2" in out
    assert "Batches: 100%" in out  # sentence-transformers' bar
    n_code = int((_gens()["domain"] == "code").sum())
    assert re.search(rf"score baseline: tests: 100%\|[#█]+\| {n_code}/{n_code} ", out), out
    assert "score baseline: BERTScore of " in out


def test_schema_and_one_row_per_id(scored):
    table, _, _ = scored
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


def test_pass_hat_k_and_effective_diversity_in_the_stage(scored):
    df = scored[0].to_pandas().set_index("id")
    # q1: c = 3 of n = 10 pass. pass^2 = C(3,2)/C(10,2) = 3/45; pass^4 = 0 (c < k): a value.
    assert df.loc["q1", "pass_hat_1"] == pytest.approx(0.3)
    assert df.loc["q1", "pass_hat_2"] == pytest.approx(3 / 45)
    assert df.loc["q1", [f"pass_hat_{k}" for k in range(4, 11)]].eq(0.0).all()
    assert df.loc["q2", "pass_hat_1"] == 0.0  # nothing passes
    # q1's three passing samples are one sentence, c1's four one body: zero diversity, a value
    assert df.loc["q1", "effective_diversity"] == pytest.approx(0.0, abs=1e-6)
    assert df.loc["c1", "effective_diversity"] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(df.loc["q2", "effective_diversity"])  # no passing pair: missing, never 0
    # creative: no checker, so neither applies
    assert df.loc["w1", [f"pass_hat_{k}" for k in range(1, 11)]].isna().all()
    assert np.isnan(df.loc["w1", "effective_diversity"])


R = 1 / np.sqrt(2)
# One hand-made eval-encoder vector per text (the embed_fn), so every value is derived by hand.
# The qa checker passes a sample that holds the answer "Paris" as a whole token.
HAND = {
    "Paris, surely": [1.0, 0.0, 0.0],  # passes
    "It is Paris": [1.0, 1.0, 0.0],  # passes; cos to the one above = 1/√2 = R
    "Rome": [0.0, 0.0, 1.0],
    "Berlin maybe": [0.0, 1.0, 1.0],
    "A poem": [1.0, 0.0, 1.0],
    "Another poem": [0.0, 1.0, 0.0],
}


def _hand_gens() -> pd.DataFrame:
    rows = []
    prompts = {
        "p4": ("qa", ["Paris, surely", "Rome", "It is Paris", "Berlin maybe"]),  # c = 2 of 4
        "p3": ("qa", ["Paris, surely", "Rome", "Berlin maybe"]),  # c = 1 of 3
        "p2": ("qa", ["Rome", "Berlin maybe"]),  # c = 0 of 2
        "w2": ("creative", ["A poem", "Another poem"]),  # no checker
    }
    for id_, (domain, outs) in prompts.items():
        ref = "Paris" if domain == "qa" else None
        for i, out in enumerate(outs):
            rows.append(
                {"system": "baseline", "id": id_, "sample": i, "domain": domain, "input": id_,
                 "reference": ref, "references": [ref] if ref else [], "meta": "{}",
                 "prompt": id_, "output": out, "n_tokens": 1, "finish_reason": "eos", "seed": i}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_pass_hat_k_and_effective_diversity_hand_made(monkeypatch):
    """Bugs caught: effective diversity over every sample (or 0 where fewer than 2 pass); pass^k
    0 instead of NaN for k > n, or Pass@k's formula."""
    from lib.scoring import score_generations

    monkeypatch.setattr(metrics, "bertscore_f1", lambda c, r, **kw: (np.full(len(c), 0.5), "h"))

    def hand(texts):
        return np.array([HAND[t] for t in texts])

    p = params_for("score", eval_encoder=MINILM, bertscore_layer=6)
    df, m = score_generations(
        _hand_gens(), _val(), p, "baseline", embed_fn=hand, train_embed_fn=hand
    )
    df = df.set_index("id")
    assert df.loc[["p2", "p3", "p4"], "n_pass"].tolist() == [0, 1, 2]
    assert pd.isna(df.loc["w2", "n_pass"])
    # p4: the passing pair is "Paris, surely" and "It is Paris": 1 − cos = 1 − R ≈ 0.293.
    # Over all four samples it would be (1 + (1 − R) + 1 + 1 + (1 − R) + 1/2)/6 = (5.5 − 2R)/6.
    assert df.loc["p4", "effective_diversity"] == pytest.approx(1 - R, abs=1e-12)
    assert df.loc["p4", "semantic_diversity"] == pytest.approx((5.5 - 2 * R) / 6, abs=1e-12)
    # p4, n = 4, c = 2: pass^1 = 2/4, pass^2 = C(2,2)/C(4,2) = 1/6, pass^3 = pass^4 = 0 (c < k),
    # pass^5..10 NaN (k > n: not computable). Pass@2 = 1 − C(2,2)/C(4,2) = 5/6 for contrast.
    hat = df.loc["p4", [f"pass_hat_{k}" for k in range(1, 11)]].to_numpy(float)
    assert hat[:4] == pytest.approx([0.5, 1 / 6, 0.0, 0.0], abs=1e-15)
    assert np.isnan(hat[4:]).all()
    assert df.loc["p4", "pass_at_2"] == pytest.approx(5 / 6)
    # p3: one passing sample, p2: none: no pair, so effective diversity is missing (never 0);
    # pass^1 = 1/3 and 0, pass^2 = 0 (c < 2), pass^4 NaN (k > n = 3)
    assert np.isnan(df.loc["p3", "effective_diversity"]) and np.isnan(
        df.loc["p2", "effective_diversity"]
    )
    assert df.loc["p3", "pass_hat_1"] == pytest.approx(1 / 3) and df.loc["p3", "pass_hat_2"] == 0.0
    assert df.loc["p2", "pass_hat_1"] == 0.0 and np.isnan(df.loc["p3", "pass_hat_4"])
    # creative: no checker, nothing applies
    assert df.loc["w2", ["effective_diversity", "pass_hat_1", "pass_hat_2"]].isna().all()
    # the metrics JSON: effective diversity's mean is over the one prompt that has it
    assert m["n_prompts_with"]["effective_diversity"] == 1
    assert m["mean"]["effective_diversity"] == pytest.approx(1 - R)
    assert m["n_prompts_with"]["pass_hat_1"] == 3 and m["n_prompts_with"]["pass_hat_4"] == 1


def test_social_checker_uses_calibrated_tau(scored):
    df, m = scored[0].to_pandas().set_index("id"), scored[1]
    val = _val()
    ev = read_params()["score"]["eval_encoder"]

    def emb(texts):
        return embed(texts, name=ev)

    tau, n_pairs = checkers.social_tau(val["references"].tolist(), 0.5, emb, "val")
    assert m["social_tau"] == pytest.approx(tau, abs=1e-6)
    assert m["social_tau_n_pairs"] == n_pairs == 6
    outs = _gens().query("id == 's1'")["output"].tolist()
    e, r = emb(outs), emb([SOCIAL_REFS[0]])[0]
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
            metrics.semantic_diversity(embed(texts, name="mpnet")), abs=1e-5
        )
        assert df.loc[id_, "semantic_diversity_train"] == pytest.approx(
            metrics.semantic_diversity(embed(texts)), abs=1e-5
        )
        assert df.loc[id_, "mean_length"] == pytest.approx(np.mean([len(t.split()) for t in texts]))
    q1 = gens.query("id == 'q1'")["output"].tolist()
    assert df.loc["q1", "rouge_l"] == pytest.approx(
        np.mean([metrics.rouge_l(t, ["Paris"]) for t in q1])
    )
    # creative has no reference → missing
    assert np.isnan(df.loc["w1", "rouge_l"]) and np.isnan(df.loc["w1", "bertscore_f1"])
    assert 0 < df.loc["s1", "bertscore_f1"] <= 1


def test_metrics_json(scored):
    table, m, _ = scored
    df = table.to_pandas()
    assert m["system"] == "baseline" and m["n_prompts"] == 5
    assert set(m["mean"]) == set(SCORE_METRICS)
    assert m["mean"]["pass_at_1"] == pytest.approx(
        np.mean([0.3, 0.0, 0.4, df.set_index("id").loc["s1", "pass_at_1"]])
    )
    assert m["n_prompts_with"]["pass_at_1"] == 4
    assert m["n_prompts_with"]["semantic_diversity_train"] == 5
    assert m["checker"]["creative"] is None and m["checker"]["code"] == "humaneval-tests-in-sandbox"


def test_wrong_system_and_missing_val_refs_fail(tmp_path):
    from lib.scoring import score_generations

    gens = _gens()
    with pytest.raises(ValueError, match="expected 'gem'"):
        score_generations(
            gens, _val(), params_for("score", eval_encoder="minilm", bertscore_layer=6), "gem"
        )
    lonely = _val().assign(references=[["a"], ["b"], ["c"]])
    with pytest.raises(ValueError, match="my/val.parquet"):
        score_generations(
            gens[gens["domain"] == "social"],
            lonely,
            params_for("score", eval_encoder="minilm", bertscore_layer=6),
            "baseline",
            val_where="my/val.parquet",
        )


# --- instruments: evaluation never measures with the encoder training scored against ----------------


@pytest.fixture(scope="module")
def independent_eval_encoder():
    """sentence-transformers on the default eval encoder's folder, outside lib.embed."""
    from sentence_transformers import SentenceTransformer

    name = read_params()["score"]["eval_encoder"]
    folder = encoder_path(name)
    assert Path(folder).resolve() != minilm_path().resolve()  # a held-out encoder by default
    model = SentenceTransformer(folder, device="cpu")

    def enc(texts):
        return model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)

    return name, folder, enc


def test_default_eval_encoder_drives_diversity_and_social_checker(scored, independent_eval_encoder):
    """Bug caught: scoring (or the social checker's τ / cosine) still measuring with MiniLM."""
    df, m = scored[0].to_pandas().set_index("id"), scored[1]
    _, _, enc = independent_eval_encoder
    # semantic diversity = mean pairwise 1 − cos under the eval encoder, by hand
    texts = _gens().query("id == 's1'")["output"].tolist()
    e = enc(texts).astype(np.float64)
    iu = np.triu_indices(len(texts), k=1)
    want = float(np.mean(1 - (e @ e.T)[iu]))
    assert df.loc["s1", "semantic_diversity"] == pytest.approx(want, abs=1e-5)
    train = float(np.mean(1 - (embed(texts) @ embed(texts).T)[iu]))  # MiniLM
    assert df.loc["s1", "semantic_diversity_train"] == pytest.approx(train, abs=1e-5)
    assert abs(want - train) > 1e-3  # the two encoders really differ here
    # τ: the ⌈0.5·6⌉ = 3rd largest of the six val similarities cos(reply_j, reply_0), eval encoder
    sims = []
    for refs in _val()["references"]:
        if len(refs) >= 2:
            r = enc(refs).astype(np.float64)
            sims.extend(r[1:] @ r[0])
    tau = sorted(sims, reverse=True)[2]
    assert m["social_tau"] == pytest.approx(tau, abs=1e-5)
    tau_minilm, _ = checkers.social_tau(_val()["references"].tolist(), 0.5, embed)
    assert abs(tau - tau_minilm) > 1e-3  # so a MiniLM τ would fail the line above
    passes = int(((enc(texts) @ enc([SOCIAL_REFS[0]])[0]) >= tau).sum())
    assert df.loc["s1", "n_pass"] == passes


def test_default_bertscore_uses_eval_encoder_and_metrics_name_both(
    scored, independent_eval_encoder
):
    """Bug caught: BERTScore on MiniLM, or a metrics JSON that does not say what measured."""
    import bert_score

    df, m = scored[0].to_pandas().set_index("id"), scored[1]
    name, folder, _ = independent_eval_encoder
    layer = read_params()["score"]["bertscore_layer"]
    assert name == "mpnet" and layer == 8
    s1 = _gens().query("id == 's1'")["output"].tolist()
    _, _, f1 = bert_score.score(
        s1, [SOCIAL_REFS] * len(s1), model_type=folder, num_layers=layer, lang=None
    )
    assert df.loc["s1", "bertscore_f1"] == pytest.approx(float(f1.mean()), abs=1e-4)
    assert m["bertscore"]["model"] == "all-mpnet-base-v2" and m["bertscore"]["layer"] == 8
    assert m["bertscore"]["hash"].startswith("all-mpnet-base-v2_L8_no-idf_version=")
    assert m["encoders"] == {
        "train": {"name": "minilm", "model": "all-MiniLM-L6-v2"},
        "eval": {"name": "mpnet", "model": "all-mpnet-base-v2"},
        "same": False,
    }
    assert m["checker"]["social"] == "all-mpnet-base-v2-cosine-to-reference-ge-tau"


def test_minilm_as_eval_encoder_is_flagged_as_same(tmp_path):
    from lib.scoring import score_generations

    gens = _gens().query("domain == 'creative'")
    p = params_for("score", eval_encoder=MINILM, bertscore_layer=6)
    _, m = score_generations(gens, _val(), p, "baseline")
    assert m["encoders"]["same"] is True and m["encoders"]["eval"]["model"] == "all-MiniLM-L6-v2"
    # the same folder under its path is the same encoder too
    _, m2 = score_generations(
        gens,
        _val(),
        params_for("score", eval_encoder=str(minilm_path()), bertscore_layer=6),
        "baseline",
    )
    assert m2["encoders"]["same"] is True
    with pytest.raises(ValueError, match="not a packaged encoder"):
        score_generations(
            gens,
            _val(),
            params_for("score", eval_encoder="BAAI/bge-small-en-v1.5", bertscore_layer=6),
            "baseline",
        )


def _summary(train: str, eval_: str, same: bool, layer: int = 8) -> dict:
    return {
        "encoders": {
            "train": {"name": "minilm", "model": train},
            "eval": {"name": "x", "model": eval_},
            "same": same,
        },
        "bertscore": {"model": eval_, "layer": layer, "hash": f"{eval_}_L{layer}"},
    }


def test_table_names_both_encoders_and_footnotes_a_shared_one():
    from lib.report import instruments, to_latex, to_markdown
    from lib.schemas import SYSTEMS
    from lib.stats import compute_stats
    from tests.score_tables import score_table

    st = compute_stats({s: score_table(s) for s in SYSTEMS}, params_for("stats", bootstrap=50), 0)
    held_out = {s: _summary("all-MiniLM-L6-v2", "all-mpnet-base-v2", False) for s in SYSTEMS}
    st["settings"]["encoders"] = instruments(held_out)
    md = to_markdown(st)
    assert "evaluation encoder all-mpnet-base-v2" in md and "with all-MiniLM-L6-v2" in md
    assert "BERTScore F1 (layer 8)" in md and "share one encoder" not in md
    shared = {s: _summary("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", True, 6) for s in SYSTEMS}
    st["settings"]["encoders"] = instruments(shared)
    md, tex = to_markdown(st), to_latex(st)
    assert "Caution: evaluation and training share one encoder (all-MiniLM-L6-v2)" in md
    assert "share one encoder" in tex
    # a table mixing instruments across its columns is refused
    mixed = dict(held_out, gem=_summary("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", True, 6))
    with pytest.raises(ValueError, match="different instruments"):
        instruments(mixed)
