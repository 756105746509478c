"""Per-sample credit for the set objectives: the home of every credit_i in the λ term.

Shapes: B = examples, N = samples per example, (B, N) rewards r(y_i) ∈ [0, 1] (`rewards.py`),
(B, N, N) pairwise distances δ (symmetric, zero diagonal; `losses.py` or `functional_distances`).

Every objective here is a symmetric set function g(Y) of N i.i.d. draws, and every credit is a
marginal credit_i = g(Y) − g(Y₋ᵢ). Since g(Y₋ᵢ) does not depend on y_i it is a valid baseline, so

    E[Σ_i credit_i · ∇log π(y_i|x)] = ∇E[g(Y)]                     (exactly; tests enumerate it)

and the λ term L = −λ·Σ_i sg[credit_i]·log π(y_i|x) ascends E[g]. The objectives:

- additive: g = D(Y) (+ mean r if rewards are given), D(Y) = mean over pairs i<j of δ(y_i, y_j)
  (DESIGN.md §3). credit_i = (2/N)·(d̄_i − b_i), d̄_i = mean_{j≠i} δ_ij, b_i = D(Y₋ᵢ).
- multiplicative (Hamid et al., "Polychromic Objectives for Reinforcement Learning", arXiv
  2509.25424): g = f(Y) = mean_i r(y_i) · D(Y). Trap: giving every member the same set score and
  subtracting the group mean cancels to zero; per-member marginals do not.
- passk (Chen et al., "Pass@k Training", arXiv 2508.10751): g = ρ̂(Y), the unbiased estimate of
  pass@k (for rewards in [0, 1]: of E[max of k draws]). Their analytic group advantage is this
  credit times the constant (N−k)/k, divided by the group's σ (`passk_advantage`).

N = 2 convention for D: Y₋ᵢ is a single sample, which has no pairs; D(Y₋ᵢ) := 0 (so credit_i = δ₁₂
for both members, the plain REINFORCE estimator of D without a baseline). Never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

from lib.train.losses import _zero_diag

OBJECTIVES = ("additive", "multiplicative", "passk")

# ---------------------------------------------------------------------------------------------
# Set diversity and its leave-one-out credit (moved from losses.py).


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


# ---------------------------------------------------------------------------------------------
# Task rewards in the credit.


def _check_rewards(rewards: torch.Tensor) -> int:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, N), got {tuple(rewards.shape)}")
    n = rewards.shape[-1]
    if n < 2:
        raise ValueError(f"a set credit needs at least 2 samples per example, got {n}")
    return n


def mean_reward_credit(rewards: torch.Tensor) -> torch.Tensor:
    """credit_i = R̄(Y) − R̄(Y₋ᵢ) = (r_i − r̄)/(N−1) for R̄ = mean reward, (B, N) → (B, N).

    R̄(Y₋ᵢ) = (N·r̄ − r_i)/(N−1), so the difference is (r_i − r̄)/(N−1): REINFORCE with the
    leave-one-out mean as baseline, scaled by 1/N (the gradient of E[mean r] = ∇E[r]).
    """
    n = _check_rewards(rewards)
    return (rewards - rewards.mean(-1, keepdim=True)) / (n - 1)


def additive_credit(dist: torch.Tensor, rewards: torch.Tensor | None = None) -> torch.Tensor:
    """credit for g = D(Y) (+ mean r): `loo_credit` (+ `mean_reward_credit`), (B, N)."""
    credit = loo_credit(dist)
    if rewards is None:
        return credit
    if rewards.shape != credit.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} do not match distances {tuple(dist.shape)}"
        )
    return credit + mean_reward_credit(rewards)


# ---------------------------------------------------------------------------------------------
# Pass@k (Chen et al., arXiv 2508.10751; code: github.com/RUCAIBox/Passk_Training, passk_adv.py)


def _max_at_k_weights(n: int, k: int, like: torch.Tensor) -> torch.Tensor:
    # With r sorted ascending, the j-th smallest (j = 1..n) is the max of C(j−1, k−1) of the
    # C(n, k) k-subsets: w_j = C(j−1, k−1)/C(n, k), Σ_j w_j = 1.
    w = [math.comb(j - 1, k - 1) / math.comb(n, k) for j in range(1, n + 1)]
    return torch.tensor(w, dtype=like.dtype, device=like.device)


def max_at_k(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """ρ̂ = mean over all k-subsets S of the N samples of max_{i∈S} r_i, (B, N) → (B,).

    The unbiased estimator of E[max of k draws]; for binary r with c passes it is Chen et al.'s
    (2021) pass@k estimator 1 − C(N−c, k)/C(N, k).
    """
    n = _check_rewards(rewards)
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= N, got k={k}, N={n}")
    return rewards.sort(-1).values @ _max_at_k_weights(n, k, rewards)


def passk_credit(rewards: torch.Tensor, k: int, threshold: float | None = None) -> torch.Tensor:
    """credit_i = ρ̂(Y) − ρ̂(Y₋ᵢ) with ρ̂ = `max_at_k`, (B, N) → (B, N); needs k < N.

    With m_i = mean max over the k-subsets that contain i, ρ̂(Y) = (k/N)·m_i + (1 − k/N)·ρ̂(Y₋ᵢ), so
    credit_i = (k/N)·(m_i − ρ̂(Y₋ᵢ)) = k/(N−k)·(m_i − ρ̂(Y)), and m_i − ρ̂(Y) is exactly the paper's
    un-normalised analytic advantage (A_pos = 1 − ρ̂; A_neg = 1 − ρ̂ − C(N−c−1, k−1)/C(N−1, k−1)).
    Rewards in [0, 1] optimise E[max of k]; `threshold` binarises first (r ≥ threshold → 1): use
    1.0 for code, so that only a sample passing every test counts, as in the evaluation's Pass@k.
    """
    n = _check_rewards(rewards)
    if not 1 <= k < n:
        raise ValueError(
            f"pass@k credit needs 1 <= k < N (a leave-one-out set of k), got k={k}, N={n}"
        )
    if threshold is not None:
        rewards = (rewards >= threshold).to(rewards.dtype)
    others = torch.tensor(
        [[j for j in range(n) if j != i] for i in range(n)], device=rewards.device
    )
    loo = rewards[:, others].sort(-1).values @ _max_at_k_weights(n - 1, k, rewards)  # (B, N)
    return max_at_k(rewards, k)[:, None] - loo


def passk_advantage(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Pass@k Training's analytic advantage for binary rewards, as their `calc_adv`, (B, N).

    ρ = 1 − C(N−c, k)/C(N, k), σ = sqrt(ρ(1 − ρ)), A_pos = (1 − ρ)/(σ + 1e-6),
    A_neg = (1 − ρ − C(N−c−1, k−1)/C(N−1, k−1))/(σ + 1e-6). Dividing by σ, which depends on the
    whole group, rescales each group's gradient: E[Σ A_i ∇log π] is no longer ∝ ∇pass@k (the same
    caveat as GRPO's std normalisation); `passk_credit` is the exactly unbiased form.
    """
    n = _check_rewards(rewards)
    if not bool(((rewards == 0) | (rewards == 1)).all()):
        raise ValueError("passk_advantage needs binary rewards (0 or 1); threshold them first")
    if not 1 <= k < n:
        raise ValueError(f"pass@k advantage needs 1 <= k < N, got k={k}, N={n}")
    out = torch.empty_like(rewards)
    for b, row in enumerate(rewards.tolist()):
        c = int(sum(row))
        rho = 1 - math.comb(n - c, k) / math.comb(n, k)
        sigma = math.sqrt(rho * (1 - rho))
        a_pos = (1 - rho) / (sigma + 1e-6)
        a_neg = (
            (1 - rho - math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1)) / (sigma + 1e-6)
            if c < n
            else 0.0
        )
        out[b] = torch.tensor([a_pos if r == 1 else a_neg for r in row], dtype=rewards.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Functional diversity for code (DARLING's partitions, arXiv 2509.02534, made exact by execution)


def functional_classes(behaviours: Sequence[Hashable]) -> list[int]:
    """Class ids for one group's N samples: equal behaviour ⇔ same class, ids by first appearance.

    A behaviour is what `rewards.code_tests` records per sample: one string per test input (the
    canonical repr of the return value, or the exception's type), so two different correct
    implementations share a class and an off-by-one does not.
    """
    ids: dict[Hashable, int] = {}
    return [ids.setdefault(b, len(ids)) for b in behaviours]


def functional_distances(
    classes: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
) -> torch.Tensor:
    """δ_ij = 0 within a class, 1 across: (N,) → (N, N) or (B, N) → (B, N, N), float32."""
    c = torch.as_tensor(classes)
    return (c[..., :, None] != c[..., None, :]).float()


# ---------------------------------------------------------------------------------------------


def objective_credit(
    objective: str,
    rewards: torch.Tensor | None,
    dist: torch.Tensor | None,
    k: int | None = None,
    threshold: float | None = None,
) -> torch.Tensor:
    """credit (B, N) of `loss.objective`: additive (D + mean r if rewards), multiplicative, passk."""
    if objective == "additive":
        if dist is None:
            raise ValueError("the additive objective needs distances")
        return additive_credit(dist, rewards)
    if objective == "multiplicative":
        if rewards is None or dist is None:
            raise ValueError("the multiplicative objective needs rewards and distances")
        return marginal_credit(rewards, dist)
    if objective == "passk":
        if rewards is None or k is None:
            raise ValueError("the passk objective needs rewards and k")
        return passk_credit(rewards, k, threshold)
    raise ValueError(f"loss.objective: unknown {objective!r}, expected one of {OBJECTIVES}")
