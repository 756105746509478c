"""Training losses as pure tensor functions: CE, GEM, distances, and the λ term.

Shapes: B = examples, T = sequence length, V = vocabulary, N = samples per example.
Labels follow the Hugging Face convention: `labels[b, t]` is the token at position t, predicted
from position t-1; IGNORE_INDEX (-100) marks prompt and padding tokens.

The λ term (DESIGN.md §3) is the score-function estimator −Σ_i sg[credit_i]·log π(y_i|x), per
sample token (`policy_term`); the KL to the base model is `kl_k2`. The per-sample credit (leave-one-out diversity, Hamid et al.'s marginal set credit, Pass@k) lives in
`lib/train/credit.py`, the task rewards in `lib/train/rewards.py`.
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


def target_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits z (M, V) at predicting positions only against targets (M,):
    `ce_loss` without the shift and the mask (the trainer's packed pass gives exactly these rows)."""
    if y.numel() == 0:
        raise ValueError("no target token in the batch: cross-entropy is undefined")
    return F.cross_entropy(_upcast(z), y)


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
    z, y = _shift(logits, labels)
    mask = y != IGNORE_INDEX
    if not bool(mask.any()):
        raise ValueError("no labelled token in the batch: GEM loss is undefined")
    return target_gem(z[mask], y[mask], beta, h)  # (M, V), (M,): labelled positions only


def target_gem(
    z: torch.Tensor, y: torch.Tensor, beta: float = 0.7, h: str = "linear"
) -> torch.Tensor:
    """`gem_loss` of logits z (M, V) at predicting positions only against targets (M,)."""
    if not beta > 0:
        raise ValueError(f"gem.beta must be > 0, got {beta}")
    if y.numel() == 0:
        raise ValueError("no target token in the batch: GEM loss is undefined")
    z = _upcast(z)
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
