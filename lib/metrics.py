"""Diversity and quality metrics, per prompt, exactly as DESIGN §4 defines them.

Every function raises ValueError on inputs it cannot score; none turns an error into 0.0.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import regex

BLEU_MAX_ORDER = 4


# --- Pass@k and pass^k ----------------------------------------------------------------------------


def _check_nck(fn: str, n: int, c: int, k: int) -> None:
    """n samples, c of them passing, k drawn: integers with 0 <= c <= n and 1 <= k <= n."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"{fn}: {name} must be an integer, got {v!r}")
    if n < 1:
        raise ValueError(f"{fn}: n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"{fn}: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"{fn}: need 1 <= k <= n, got k={k}, n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k (Chen et al. 2021): 1 − C(n−c, k)/C(n, k), 1.0 when n − c < k."""
    _check_nck("pass_at_k", n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k (Yao et al. 2024, τ-bench): C(c, k)/C(n, k), 0.0 when c < k.

    The probability that all k of k samples drawn without replacement from the n pass: the
    chance that k tries all succeed, where Pass@k is the chance that one of them does. pass^1 =
    Pass@1 = c/n; pass^k falls with k as Pass@k rises. Exact: a ratio of integers, rounded once.
    """
    _check_nck("pass_hat_k", n, c, k)
    return math.comb(int(c), int(k)) / math.comb(int(n), int(k))  # comb(c, k) = 0 when c < k


# --- Self-BLEU ------------------------------------------------------------------------------------


@functools.cache
def _tokenizer_13a() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _bleu_ngrams(text: str) -> tuple[Counter, int]:
    """sacrebleu's preprocessing of a segment (13a of the right-stripped text) and its n-grams."""
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    return extract_all_word_ngrams(_tokenizer_13a()(text.rstrip()), 1, BLEU_MAX_ORDER)


def _closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    # sacrebleu BLEU._get_closest_ref_len: closest length, ties go to the shorter reference.
    closest_diff, closest_len = -1, -1
    for ref_len in ref_lens:
        diff = abs(hyp_len - ref_len)
        if closest_diff == -1 or diff < closest_diff:
            closest_diff, closest_len = diff, ref_len
        elif diff == closest_diff and ref_len < closest_len:
            closest_len = ref_len
    return closest_len


def _my_log(x: float) -> float:
    return -9999999999 if x == 0.0 else math.log(x)


def _sentence_bleu_from_stats(
    correct: list[int], total: list[int], sys_len: int, ref_len: int
) -> float:
    """sacrebleu BLEU.compute_bleu with smooth_method='exp', effective_order=True, order 4.

    Replicated operation by operation (same float order) so results equal sacrebleu's exactly.
    """
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * BLEU_MAX_ORDER
    if not any(correct):
        return 0.0
    smooth_mteval = 1.0
    eff_order = BLEU_MAX_ORDER
    for n in range(1, BLEU_MAX_ORDER + 1):
        if total[n - 1] == 0:
            break
        eff_order = n
        if correct[n - 1] == 0:
            smooth_mteval *= 2
            precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    return bp * math.exp(sum([_my_log(p) for p in precisions[:eff_order]]) / eff_order)


def self_bleu(texts: Sequence[str]) -> float:
    """Mean over i of sacrebleu sentence_bleu(texts[i], texts[:i] + texts[i+1:]).score / 100.

    Each text is tokenized and counted once. sacrebleu clips a hypothesis n-gram by its maximum
    count over the references; over "all texts but i" that is the top count among the others,
    so per n-gram we keep the largest count, which text holds it, and the second largest.
    """
    texts = list(texts)
    if len(texts) < 2:
        raise ValueError(f"self_bleu needs at least 2 texts, got {len(texts)}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"self_bleu: text {i} is {type(t).__name__}, not str")
    counted = [_bleu_ngrams(t) for t in texts]
    # ngram -> [max count, index holding it, max count over the other texts]
    top: dict[tuple[str, ...], list[int]] = {}
    for idx, (ngrams, _) in enumerate(counted):
        for g, cnt in ngrams.items():
            entry = top.get(g)
            if entry is None:
                top[g] = [cnt, idx, 0]
            elif cnt > entry[0]:
                entry[2] = entry[0]
                entry[0], entry[1] = cnt, idx
            elif cnt > entry[2]:
                entry[2] = cnt
    lens = [n for _, n in counted]
    scores = []
    for i, (ngrams, hyp_len) in enumerate(counted):
        ref_len = _closest_ref_len(hyp_len, lens[:i] + lens[i + 1 :])
        correct = [0] * BLEU_MAX_ORDER
        total = [0] * BLEU_MAX_ORDER
        for g, cnt in ngrams.items():
            o = len(g) - 1
            total[o] += cnt
            best, holder, second = top[g]
            ref_cnt = second if holder == i else best
            if ref_cnt:
                correct[o] += min(cnt, ref_cnt)
        scores.append(_sentence_bleu_from_stats(correct, total, hyp_len, ref_len) / 100.0)
    return float(sum(scores) / len(scores))


def self_bleu_naive(texts: Sequence[str]) -> float:
    """The definition itself: one sacrebleu sentence_bleu call per sample (slow; for checks)."""
    from sacrebleu import sentence_bleu

    texts = list(texts)
    if len(texts) < 2:
        raise ValueError(f"self_bleu needs at least 2 texts, got {len(texts)}")
    vals = [sentence_bleu(t, texts[:i] + texts[i + 1 :]).score / 100.0 for i, t in enumerate(texts)]
    return float(sum(vals) / len(vals))


# --- Distinct-n ----------------------------------------------------------------------------------


def _ngram_stats(texts: Sequence[str], n: int) -> tuple[int, int, int]:
    """(distinct n-grams, total n-grams, total tokens); n-grams never cross sample boundaries."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"distinct-n: n must be a positive integer, got {n!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("distinct-n: no texts to score")
    seen: set[tuple[str, ...]] = set()
    total = tokens = 0
    for t in texts:
        toks = t.lower().split()
        tokens += len(toks)
        grams = [tuple(toks[j : j + n]) for j in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen), total, tokens


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct / total n-grams over the samples (lowercased whitespace tokens); 0 when none."""
    distinct, total, _ = _ngram_stats(texts, n)
    return distinct / total if total else 0.0


def distinct_n_li(texts: Sequence[str], n: int) -> float:
    """Li et al. (2016) variant: distinct n-grams / total tokens; 0 when there are no tokens."""
    distinct, _, tokens = _ngram_stats(texts, n)
    return distinct / tokens if tokens else 0.0


# --- Semantic diversity --------------------------------------------------------------------------


def semantic_diversity(embeddings: np.ndarray) -> float:
    """Mean over pairs i<j of 1 − cos(e_i, e_j)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"semantic_diversity needs a (n>=2, d) array, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("semantic_diversity: embeddings contain NaN or inf")
    norms = np.linalg.norm(e, axis=1)
    if (norms == 0).any():
        raise ValueError(f"semantic_diversity: zero embedding at row {int(np.argmin(norms))}")
    u = e / norms[:, None]
    cos = u @ u.T  # (n, n)
    iu = np.triu_indices(len(u), k=1)
    return float(np.mean(1.0 - cos[iu]))


def effective_diversity(embeddings: np.ndarray, passed: Sequence[bool]) -> float:
    """Semantic diversity among the samples that pass: semantic_diversity(e[passed]).

    Quality-thresholded ("effective") diversity (Shypula et al. 2025): how different the good
    answers are from each other, so failing samples cannot buy diversity. `passed[i]` is sample
    i's checker verdict (the one Pass@k counts). Fewer than 2 passing samples raise ValueError
    (the score stage stores NaN): there is no pair to compare, which is not "no diversity".
    """
    mask = np.asarray(passed)
    e = np.asarray(embeddings)
    if mask.dtype != bool or mask.ndim != 1 or e.ndim != 2 or len(mask) != len(e):
        raise ValueError(
            f"effective_diversity: need (n, d) embeddings and n bools, got {e.shape} and "
            f"{mask.shape} {mask.dtype}"
        )
    if mask.sum() < 2:
        raise ValueError(f"effective_diversity: needs >= 2 passing samples, got {int(mask.sum())}")
    return semantic_diversity(e[mask])


# --- ROUGE-L ---------------------------------------------------------------------------------------

# A token: a run of letters/digits/marks in a spaced script; one character of a script written
# without spaces (CJK, Thai, ...); or one emoji / pictographic symbol with its modifiers.
# On ASCII this is exactly rouge-score's default ([a-z0-9]+ after lowercasing).
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
_TOKEN_RE = regex.compile(
    rf"[{_UNSPACED}]"
    rf"|[\p{{L}}\p{{N}}\p{{M}}--[{_UNSPACED}]]+"
    r"|(?:\p{Extended_Pictographic}|\p{So})(?:[\p{M}\p{Sk}\uFE0F]|\u200d(?:\p{Extended_Pictographic}|\p{So}))*",
    flags=regex.V1,
)


class UnicodeTokenizer:
    """rouge-score tokenizer (`.tokenize(text) -> list[str]`) that keeps non-Latin text and emoji."""

    def tokenize(self, text: str) -> list[str]:
        return _cached_tokens(text)


@functools.lru_cache(maxsize=1 << 16)
def _cached_tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())


def rouge_l(candidate: str, references: Sequence[str]) -> float:
    """ROUGE-L F of `candidate` against each reference, max over references."""
    if isinstance(references, str):
        raise ValueError("rouge_l: references must be a sequence of strings, not a string")
    refs = list(references)
    if not refs:
        raise ValueError("rouge_l: no reference to score against")
    scorer = _rouge_scorer()
    return max(scorer.score(r, candidate)["rougeL"].fmeasure for r in refs)


# --- BERTScore ----------------------------------------------------------------------------------


def bertscore_f1(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    num_layers: int,
    encoder: str = "minilm",
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, str]:
    """BERTScore F1 per candidate (max over its references) with a local encoder, and the hash
    (`progress`: bert_score's own bars and timing).

    `encoder` is a `lib.embed` name (`minilm`, `mpnet`) or a local folder. bert_score takes a local
    folder as `model_type` (AutoModel/AutoTokenizer.from_pretrained on the path, no download) as
    long as `num_layers` is given (otherwise it looks the name up in its table) and
    `lang`/rescaling are not used. The hash names the published model (`lib.embed.model_name`)
    instead of the machine-specific path so metrics stay comparable across checkouts.
    """
    import bert_score
    from bert_score.utils import get_hash

    from lib import onednn
    from lib.embed import encoder_path, model_name

    if device.startswith("cpu"):
        onednn.enable()
    cands = list(candidates)
    refs = [list(r) for r in references]
    if not cands:
        raise ValueError("bertscore_f1: no candidates")
    if len(cands) != len(refs):
        raise ValueError(f"bertscore_f1: {len(cands)} candidates but {len(refs)} reference lists")
    for i, r in enumerate(refs):
        if not r:
            raise ValueError(f"bertscore_f1: candidate {i} has no reference")
    model_path = encoder_path(encoder)
    # Empty text: bert_score encodes "" through a tokenizer method transformers 5 removed. Its own
    # convention is kept: an empty candidate matches no reference token (F1 = 0, as ROUGE-L);
    # empty references are dropped, and a candidate left with none has no score (NaN = missing).
    refs = [[x for x in r if x.strip()] for r in refs]
    out = np.full(len(cands), np.nan)
    for i, (c, r) in enumerate(zip(cands, refs, strict=True)):
        if r and not c.strip():
            out[i] = 0.0
    todo = [i for i, (c, r) in enumerate(zip(cands, refs, strict=True)) if r and c.strip()]
    if todo:
        _, _, f1 = bert_score.score(
            [cands[i] for i in todo],
            [refs[i] for i in todo],
            model_type=str(model_path),
            num_layers=num_layers,
            batch_size=batch_size,
            lang=None,
            rescale_with_baseline=False,
            verbose=progress,
            device=device,  # bert_score's own default takes any visible GPU; ours is the param
        )
        out[todo] = f1.numpy().astype(np.float64)
    digest = get_hash(model_name(encoder), num_layers, False, False, False, False)
    return out, digest
