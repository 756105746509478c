"""Training losses as pure tensor functions: CE, GEM, and the polychromic diversity term.

Shapes: B = examples, T = sequence length, V = vocabulary, N = samples per example.
Labels follow the Hugging Face convention: `labels[b, t]` is the token at position t, predicted
from position t-1; IGNORE_INDEX (-100) marks prompt and padding tokens.

The diversity term (DESIGN.md §3). D(Y) = mean over pairs i<j of δ(y_i, y_j). Sampling is not
differentiable, so ∇E[D] uses the score-function estimator with leave-one-out credit:

    d̄_i = mean_{j≠i} δ(y_i, y_j),  b_i = D(Y₋ᵢ),  credit_i = (2/N)·(d̄_i − b_i)
    L = CE(y*|x) − λ·Σ_i sg[credit_i]·log π(y_i|x)

`credit_i` equals the marginal set advantage D(Y) − D(Y₋ᵢ) exactly (algebra in `loo_credit`), and
its sum over i is zero for N ≥ 3. The quality-aware variant (Hamid et al., "Polychromic Objectives
for Reinforcement Learning", arXiv 2509.25424) uses f(Y) = mean_i r(y_i) · D(Y) with the same
marginal credit f(Y) − f(Y₋ᵢ). Every b_i / f(Y₋ᵢ) is independent of y_i, so both estimators stay
unbiased. A shared set score minus the group mean would cancel to zero; per-member marginals do not.

N = 2 convention: Y₋ᵢ is a single sample, which has no pairs; D(Y₋ᵢ) := 0 (so credit_i = δ₁₂ for
both members, the plain REINFORCE estimator of D without a baseline). Never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lib.chat import IGNORE_INDEX


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # logits (B, T, V) predict labels (B, T) one position later: (B, T-1, V), (B, T-1)
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    return logits[:, :-1, :], labels[:, 1:]


def _upcast(z: torch.Tensor) -> torch.Tensor:
    # Half-precision logits lose too much in log-softmax; float32/float64 stay as they are.
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label_t | <t) per position, (B, T-1), 0.0 where the label is IGNORE_INDEX."""
    z, y = _shift(logits, labels)
    nll = F.cross_entropy(
        _upcast(z).reshape(-1, z.shape[-1]),
        y.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )  # (B*(T-1),), 0 at ignored positions
    return -nll.view(y.shape)


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = sum of the labelled tokens' log-probs, (B,)."""
    return token_logprobs(logits, labels).sum(-1)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy over labelled tokens (what Hugging Face's `loss` computes)."""
    z, y = _shift(logits, labels)
    if not bool((y != IGNORE_INDEX).any()):
        raise ValueError("no labelled token in the batch: cross-entropy is undefined")
    return F.cross_entropy(
        _upcast(z).reshape(-1, z.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX
    )


def gem_loss(
    logits: torch.Tensor, labels: torch.Tensor, beta: float = 0.7, h: str = "linear"
) -> torch.Tensor:
    """GEM (Li et al., ICLR 2025, arXiv 2408.16673), mean over labelled tokens.

    Per token with logits z, p = softmax(z), q = sg(softmax(z/β)):
        linear:      loss = −log p(y*) + Σ_v q_v·log p_v          (DESIGN.md §3)
        logsigmoid:  loss = −Σ_v q_v·w_v·(log p(y*) − log p_v),  w_v = sg(σ(0.01·(z_v − z_y*)))
    The authors' code (xzy-bit/DiversityOfLLM, sft_trainer.py `gem_loss`) writes the linear form as
    −Σ_v q_v·(log p(y*) − log p_v), identical because Σ_v q_v = 1; its first release defaulted to
    h=logsigmoid, later ones (and the Triton kernel) to linear, which is our default. The gradient
    w.r.t. z is q − onehot(y*), so β = 1 gives exactly the CE gradient.
    """
    if not beta > 0:
        raise ValueError(f"gem.beta must be > 0, got {beta}")
    z, y = _shift(logits, labels)
    mask = y != IGNORE_INDEX
    if not bool(mask.any()):
        raise ValueError("no labelled token in the batch: GEM loss is undefined")
    z = _upcast(z[mask])  # (M, V) labelled positions only
    y = y[mask]  # (M,)
    logp = z.log_softmax(-1)  # (M, V)
    q = (z.detach() / beta).softmax(-1)  # (M, V)
    logp_y = logp.gather(-1, y[:, None])  # (M, 1)
    if h == "linear":
        per_tok = -logp_y[:, 0] + (q * logp).sum(-1)
    elif h == "logsigmoid":
        with torch.no_grad():
            w = torch.sigmoid(0.01 * (z - z.gather(-1, y[:, None])))  # (M, V)
        per_tok = -(q * w * (logp_y - logp)).sum(-1)
    else:
        raise ValueError(f"gem.h must be 'linear' or 'logsigmoid', got {h!r}")
    return per_tok.mean()


# ---------------------------------------------------------------------------------------------
# Pairwise distances δ ∈ [0, 1]-ish, shape (B, N, N), symmetric, zero diagonal.


def _zero_diag(d: torch.Tensor) -> torch.Tensor:
    n = d.shape[-1]
    return d * (1 - torch.eye(n, dtype=d.dtype, device=d.device))


def semantic_distances(emb: torch.Tensor) -> torch.Tensor:
    """1 − cos of unit-normalised embeddings (B, N, D) → (B, N, N). Range [0, 2], ≈[0, 1] in practice."""
    cos = emb @ emb.transpose(-1, -2)  # (B, N, N)
    return _zero_diag((1.0 - cos).clamp(min=0.0, max=2.0))


def word_bigrams(text: str) -> set[tuple[str, str]]:
    # Boundary markers give a one-word or empty text a non-empty set, so Jaccard is always defined.
    words = ["<s>", *text.lower().split(), "</s>"]
    return set(zip(words[:-1], words[1:], strict=False))


def lexical_distances(texts: Sequence[Sequence[str]]) -> torch.Tensor:
    """1 − Jaccard of lowercased word-bigram sets, per group of N texts → (B, N, N) float32."""
    n = len(texts[0])
    out = torch.zeros((len(texts), n, n), dtype=torch.float32)
    for b, group in enumerate(texts):
        if len(group) != n:
            raise ValueError(f"group {b} has {len(group)} texts, expected {n}")
        sets = [word_bigrams(t) for t in group]
        for i in range(n):
            for j in range(i + 1, n):
                jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
                out[b, i, j] = out[b, j, i] = 1.0 - jac
    return out


# ---------------------------------------------------------------------------------------------
# Set scores and per-sample credit.


def _check_dist(dist: torch.Tensor) -> int:
    if dist.dim() != 3 or dist.shape[-1] != dist.shape[-2]:
        raise ValueError(f"distances must be (B, N, N), got {tuple(dist.shape)}")
    n = dist.shape[-1]
    if n < 2:
        raise ValueError(f"a diversity credit needs at least 2 samples per example, got {n}")
    return n


def set_diversity(dist: torch.Tensor) -> torch.Tensor:
    """D(Y) = mean over pairs i<j of δ_ij, (B, N, N) → (B,)."""
    n = _check_dist(dist)
    return _zero_diag(dist).sum((-1, -2)) / (n * (n - 1))


def leave_one_out_diversity(dist: torch.Tensor) -> torch.Tensor:
    """b_i = D(Y₋ᵢ), the mean distance among the other N−1 samples, (B, N); 0 when N = 2 (no pairs)."""
    n = _check_dist(dist)
    d = _zero_diag(dist)
    if n == 2:
        return torch.zeros(d.shape[:-1], dtype=d.dtype, device=d.device)
    pair_sum = d.sum((-1, -2)) / 2  # (B,) Σ_{i<j} δ_ij
    row = d.sum(-1)  # (B, N) Σ_j δ_ij
    return (pair_sum[:, None] - row) / ((n - 1) * (n - 2) / 2)


def loo_credit(dist: torch.Tensor) -> torch.Tensor:
    """credit_i = (2/N)·(d̄_i − b_i), (B, N, N) → (B, N).

    Equals D(Y) − D(Y₋ᵢ): with P = Σ_{i<j} δ, r_i = Σ_j δ_ij, both are 2(N·r_i − 2P)/(N(N−1)(N−2)),
    whose sum over i is 0 (Σ r_i = 2P). With N = 2 (b_i := 0) it is δ₁₂ for both members.
    """
    n = _check_dist(dist)
    dbar = _zero_diag(dist).sum(-1) / (n - 1)  # (B, N)
    return (2.0 / n) * (dbar - leave_one_out_diversity(dist))


def set_score(quality: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Hamid et al.'s polychromic set objective f(Y) = mean_i r(y_i) · D(Y), (B, N), (B, N, N) → (B,)."""
    _check_dist(dist)
    return quality.mean(-1) * set_diversity(dist)


def marginal_credit(quality: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """credit_i = f(Y) − f(Y₋ᵢ) for f = mean quality × D, (B, N), (B, N, N) → (B, N).

    f(Y₋ᵢ) = (mean_{j≠i} r_j)·D(Y₋ᵢ); with N = 2, D(Y₋ᵢ) := 0 so credit_i = f(Y) for both.
    """
    n = _check_dist(dist)
    if quality.shape != dist.shape[:-1]:
        raise ValueError(
            f"quality {tuple(quality.shape)} does not match distances {tuple(dist.shape)}"
        )
    q_minus = (quality.sum(-1, keepdim=True) - quality) / (n - 1)  # (B, N)
    return set_score(quality, dist)[:, None] - q_minus * leave_one_out_diversity(dist)


def quality_scores(sample_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
    """r(y_i) = cos(sample, reference) clipped to [0, 1]: (B, N, D), (B, D) → (B, N)."""
    return (sample_emb @ ref_emb[:, :, None])[..., 0].clamp(0.0, 1.0)


def diversity_term(credit: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """−Σ_i sg[credit_i]·log π(y_i|x), mean over examples: (B, N), (B, N) → scalar (λ applied by caller).

    Minimising it raises log π of samples with positive credit: gradient ascent on E[D] (or E[f]).
    """
    if credit.shape != logp.shape:
        raise ValueError(
            f"credit {tuple(credit.shape)} does not match log-probs {tuple(logp.shape)}"
        )
    return -(credit.detach() * logp).sum(-1).mean()


# ---------------------------------------------------------------------------------------------
# The trainer's sample terms: the λ term per token, and the KL to the base model.


def policy_term(credit: torch.Tensor, logp: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """−Σ_b Σ_i sg[credit_bi]·log π(y_bi|x_b) / Σ_b Σ_i |y_bi|: (B, N), (B, N), scalar → scalar.

    The score-function surrogate normalised per sample token, as CE is per reference token: DAPO's
    token-level policy-gradient loss (Yu et al., arXiv 2503.14476, §3.3) with the set credit as
    the advantage of every token of y_i. Summing the sample's log-probs over a per-example mean (the
    old form) made λ's strength grow with `loss.max_new_tokens`; here one λ transfers across
    lengths. Minimising it raises log π of samples with positive credit.
    """
    if credit.shape != logp.shape:
        raise ValueError(
            f"credit {tuple(credit.shape)} does not match log-probs {tuple(logp.shape)}"
        )
    if not float(n_tokens) > 0:
        raise ValueError("no sample token: the per-token λ term is undefined")
    return -(credit.detach() * logp).sum() / n_tokens


def kl_k2(logp_tok: torch.Tensor, ref_logp_tok: torch.Tensor) -> torch.Tensor:
    """k2 = ½·(log π(y_t) − log π_ref(y_t))², mean over the sampled tokens: (S,), (S,) → scalar.

    Schulman, "Approximating KL divergence" (2020), and Zhang et al., "On the Design of
    KL-Regularized Policy Gradient Algorithms for LLM Reasoning" (arXiv 2505.17508): with the token
    drawn from π (on-policy), E[∇k2] = E[(log π − log π_ref)·∇log π] = ∇KL(π(·|s)‖π_ref(·|s)) at
    each visited prefix s (E[∇log π] = 0). Its value and gradient are 0 where π = π_ref (LoRA B = 0
    at initialisation). π_ref's log-probs are constants (computed without grad).
    """
    if logp_tok.shape != ref_logp_tok.shape:
        raise ValueError(
            f"log-probs {tuple(logp_tok.shape)} and reference {tuple(ref_logp_tok.shape)} differ"
        )
    if logp_tok.numel() == 0:
        raise ValueError("no sample token: the KL estimate is undefined")
    return 0.5 * (logp_tok - ref_logp_tok.detach()).pow(2).mean()
