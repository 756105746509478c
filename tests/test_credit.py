"""lib.train.credit: exact credit values, and unbiasedness of every objective by enumeration.

The unbiasedness tests take a policy over 3 outputs, π = softmax(θ), draw N i.i.d. samples, and
enumerate all 3^N ordered sets Y to get the estimator's exact expectation

    E[Σ_i credit_i(Y) · ∇log π(y_i)] = Σ_Y Π_i π(y_i) · Σ_i credit_i(Y) · (e_{y_i} − π)

(∇_θ log softmax(θ)_o = e_o − π). They compare it with autograd on the objective's closed-form
expectation, derived by hand in each test (never by enumerating the same credit). Each test also
plants the bug it guards against and sees the comparison fail.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch

from lib.train import credit as cr


def _dist(n: int, pairs: dict[tuple[int, int], float]) -> torch.Tensor:
    d = torch.zeros(1, n, n, dtype=torch.float64)
    for (i, j), v in pairs.items():
        d[0, i, j] = d[0, j, i] = v
    return d


def _brute_d(d: torch.Tensor, keep: list[int]) -> float:
    pairs = list(itertools.combinations(keep, 2))
    return sum(float(d[0, i, j]) for i, j in pairs) / len(pairs) if pairs else 0.0


# -- leave-one-out credit ---------------------------------------------------------------------


def test_loo_credit_exact_values_n3():
    d = _dist(3, {(0, 1): 0.2, (0, 2): 0.4, (1, 2): 0.6})
    # d̄ = [0.3, 0.4, 0.5]; b = D(Y₋ᵢ) = [0.6, 0.4, 0.2]; credit = (2/3)(d̄ − b)
    assert cr.leave_one_out_diversity(d)[0].tolist() == pytest.approx([0.6, 0.4, 0.2])
    assert cr.loo_credit(d)[0].tolist() == pytest.approx([-0.2, 0.0, 0.2])
    assert float(cr.set_diversity(d)[0]) == pytest.approx(0.4)


def test_loo_credit_is_marginal_set_advantage_and_sums_to_zero():
    g = torch.Generator().manual_seed(0)
    for n in (3, 4, 6):
        a = torch.rand(n, n, generator=g, dtype=torch.float64)
        d = ((a + a.T) / 2 * (1 - torch.eye(n, dtype=torch.float64)))[None]
        credit = cr.loo_credit(d)[0]
        full = _brute_d(d, list(range(n)))
        for i in range(n):
            others = [j for j in range(n) if j != i]
            assert float(credit[i]) == pytest.approx(full - _brute_d(d, others), abs=1e-12)
        assert float(credit.sum()) == pytest.approx(0.0, abs=1e-12)


def test_loo_credit_n2_convention_and_no_nan():
    d = _dist(2, {(0, 1): 0.7})
    assert cr.leave_one_out_diversity(d)[0].tolist() == [0.0, 0.0]
    assert cr.loo_credit(d)[0].tolist() == pytest.approx([0.7, 0.7])
    assert cr.loo_credit(_dist(2, {}))[0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_identical_samples_give_zero_credit(n):
    d = torch.zeros(2, n, n)
    credit = cr.loo_credit(d)
    assert not torch.isnan(credit).any()
    assert torch.equal(credit, torch.zeros(2, n))
    q = torch.full((2, n), 0.8)
    assert torch.equal(cr.marginal_credit(q, d), torch.zeros(2, n))


def test_credit_rejects_single_sample():
    with pytest.raises(ValueError, match="at least 2"):
        cr.loo_credit(torch.zeros(1, 1, 1))


# -- multiplicative set objective -------------------------------------------------------------


def test_marginal_credit_exact_values():
    d = _dist(3, {(0, 1): 0.2, (0, 2): 0.4, (1, 2): 0.6})
    q = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    # f(Y) = 0.5 · 0.4 = 0.2; f(Y₋₀) = 0.25·0.6, f(Y₋₁) = 0.5·0.4, f(Y₋₂) = 0.75·0.2
    assert float(cr.set_score(q, d)[0]) == pytest.approx(0.2)
    assert cr.marginal_credit(q, d)[0].tolist() == pytest.approx([0.05, 0.0, 0.05])


def test_marginal_credit_not_cancelled_when_qualities_differ():
    # Equal distances: diversity gives no signal, quality does. A shared set score minus the group
    # mean would be zero here; the marginal credit is not.
    d = _dist(3, {(0, 1): 0.5, (0, 2): 0.5, (1, 2): 0.5})
    q = torch.tensor([[0.9, 0.5, 0.1]], dtype=torch.float64)
    credit = cr.marginal_credit(q, d)[0]
    assert credit.tolist() == pytest.approx([0.1, 0.0, -0.1])
    shared = cr.set_score(q, d).expand(3)
    assert torch.allclose(shared - shared.mean(), torch.zeros(3, dtype=torch.float64))  # the trap


def test_marginal_credit_n2():
    d = _dist(2, {(0, 1): 0.5})
    q = torch.tensor([[0.8, 0.4]], dtype=torch.float64)
    assert cr.marginal_credit(q, d)[0].tolist() == pytest.approx([0.3, 0.3])


# -- Pass@k: exact values and the paper's formula ---------------------------------------------


def test_max_at_k_hand_values():
    r = torch.tensor([[0.2, 0.9, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    # k = 2 subsets of row 0: {.2,.9}→.9, {.2,.5}→.5, {.9,.5}→.9, mean 2.3/3.
    # Row 1, binary with c = 1: 1 − C(2,2)/C(3,2) = 2/3.
    assert cr.max_at_k(r, 2).tolist() == pytest.approx([2.3 / 3, 2 / 3])
    assert cr.max_at_k(r, 1).tolist() == pytest.approx([1.6 / 3, 1 / 3])  # k = 1: the mean
    with pytest.raises(ValueError, match="1 <= k <= N"):
        cr.max_at_k(r, 4)


def test_passk_credit_hand_values_n4_k2():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # ρ̂(Y) = 1 − C(3,2)/C(4,2) = 1/2. Without the pass: ρ̂ = 0 → credit 1/2. Without a fail:
    # 3 samples, 1 pass: 1 − C(2,2)/C(3,2) = 2/3 → credit 1/2 − 2/3 = −1/6.
    assert cr.passk_credit(r, 2)[0].tolist() == pytest.approx([0.5, -1 / 6, -1 / 6, -1 / 6])
    # The paper (their calc_adv): ρ = σ = 1/2, A_pos = (1/2)/(1/2) = 1,
    # A_neg = (1 − 1/2 − C(2,1)/C(3,1))/(1/2) = −1/3.
    adv = cr.passk_advantage(r, 2)[0].tolist()
    assert adv == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3], rel=1e-5)
    with pytest.raises(ValueError, match="k < N"):
        cr.passk_credit(r, 4)


def test_passk_credit_is_the_papers_advantage_rescaled():
    # credit = k/(N−k)·(m_i − ρ̂) and the paper's advantage is (m_i − ρ̂)/(σ + 1e-6): their ratio is
    # the constant k/(N−k)·(σ + 1e-6) in every group (all-pass and all-fail groups: both 0).
    g = torch.Generator().manual_seed(1)
    n, k = 6, 2
    r = (torch.rand(50, n, generator=g, dtype=torch.float64) < 0.4).double()
    r[0], r[1] = 1.0, 0.0
    rho = cr.max_at_k(r, k)
    sigma = (rho * (1 - rho)).sqrt()
    scaled = cr.passk_advantage(r, k) * (sigma[:, None] + 1e-6) * k / (n - k)
    assert torch.allclose(scaled, cr.passk_credit(r, k), atol=1e-12)
    assert cr.passk_credit(r[:2], k).abs().max() == 0


def test_passk_threshold_binarises_and_advantage_rejects_fractions():
    r = torch.tensor([[1.0, 2 / 3, 0.0, 1.0]], dtype=torch.float64)
    bin_ = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(cr.passk_credit(r, 2, threshold=1.0), cr.passk_credit(bin_, 2))
    assert not torch.equal(cr.passk_credit(r, 2), cr.passk_credit(bin_, 2))
    with pytest.raises(ValueError, match="binary"):
        cr.passk_advantage(r, 2)


def test_mean_reward_credit_is_loo_marginal():
    r = torch.tensor([[0.9, 0.3, 0.0]], dtype=torch.float64)
    # R̄(Y) = 0.4; R̄(Y₋ᵢ) = [0.15, 0.45, 0.6] → [0.25, −0.05, −0.2]
    assert cr.mean_reward_credit(r)[0].tolist() == pytest.approx([0.25, -0.05, -0.2])


# -- functional classes -----------------------------------------------------------------------


def test_functional_classes_and_distances():
    beh = [("r:3", "r:5"), ("r:3", "r:5"), ("r:4", "r:6"), ("e:TypeError", "r:5"), ("r:4", "r:6")]
    assert cr.functional_classes(beh) == [0, 0, 1, 2, 1]
    d = cr.functional_distances([[0, 0, 1, 2, 1]])
    assert d.shape == (1, 5, 5) and d.dtype == torch.float32
    assert d[0, 0].tolist() == [0, 0, 1, 1, 1] and d[0, 2].tolist() == [1, 1, 0, 1, 0]
    assert torch.equal(cr.functional_distances([0, 0, 1]), d[0, :3, :3])
    # D over classes: 10 pairs, 2 within a class → D = 8/10
    assert float(cr.set_diversity(d)[0]) == pytest.approx(0.8)


# -- unbiasedness by enumeration --------------------------------------------------------------

THETA = [0.3, -0.2, 0.5]
DELTA = torch.tensor([[0.0, 0.3, 0.8], [0.3, 0.0, 0.5], [0.8, 0.5, 0.0]], dtype=torch.float64)
R_SOFT = torch.tensor([0.9, 0.2, 0.6], dtype=torch.float64)
R_BIN = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)

Credit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (1, N) rewards, (1, N, N) → (1, N)


def _estimator_mean(
    credit_fn: Credit, r: torch.Tensor, n: int, theta: list[float] = THETA
) -> torch.Tensor:
    pi = torch.tensor(theta, dtype=torch.float64).softmax(-1)
    grad = torch.zeros(3, dtype=torch.float64)
    for ys in itertools.product(range(3), repeat=n):
        idx = torch.tensor(ys)
        p = math.prod(float(pi[y]) for y in ys)
        c = credit_fn(r[idx][None], DELTA[idx][:, idx][None])[0]
        for i, y in enumerate(ys):
            grad += p * c[i] * (torch.nn.functional.one_hot(torch.tensor(y), 3) - pi)
    return grad


def _exact_grad(
    objective: Callable[[torch.Tensor], torch.Tensor], theta: list[float] = THETA
) -> torch.Tensor:
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(objective(t.softmax(-1)), t)
    return g


def _e_diversity(pi: torch.Tensor) -> torch.Tensor:
    return pi @ DELTA @ pi  # every pair of i.i.d. draws has E[δ] = πᵀΔπ, so E[D(Y)] too


def _e_product(r: torch.Tensor, n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    # f = (1/N)Σ_i r_i · (1/P)Σ_{j<l} δ_jl, P = N(N−1)/2. N−1 of the P pairs contain i, where
    # E[r_i δ_il] = Σ_ab π_a π_b r_a Δ_ab; elsewhere E[r]E[δ]. So E[f] = (2/N)E[rδ] + ((N−2)/N)E[r]E[δ].
    def e(pi: torch.Tensor) -> torch.Tensor:
        e_rd = (pi * r) @ DELTA @ pi
        return (2 / n) * e_rd + ((n - 2) / n) * (pi @ r) * _e_diversity(pi)

    return e


def _e_max_at_k(r: torch.Tensor, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    # E[max of k draws] = Σ_v v·(F(v)^k − F(v⁻)^k), F the CDF of r(y) under π (distinct values).
    def e(pi: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((), dtype=torch.float64)
        below = torch.zeros((), dtype=torch.float64)
        for v in sorted(set(r.tolist())):
            at_or_below = below + pi[r == v].sum()
            out = out + v * (at_or_below**k - below**k)
            below = at_or_below
        return out

    return e


def _assert_unbiased(credit_fn: Credit, r: torch.Tensor, n: int, objective) -> None:
    got, want = _estimator_mean(credit_fn, r, n), _exact_grad(objective)
    assert want.abs().max() > 1e-3  # a non-trivial gradient to match
    assert torch.allclose(got, want, atol=1e-12), (got, want)


def _assert_biased(credit_fn: Credit, r: torch.Tensor, n: int, objective) -> None:
    with pytest.raises(AssertionError):
        _assert_unbiased(credit_fn, r, n, objective)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_additive_credit_is_unbiased_for_diversity(n):
    _assert_unbiased(lambda r, d: cr.additive_credit(d), R_SOFT, n, _e_diversity)
    # planted: the sign flipped, and a baseline that depends on y_i (b_i = D(Y) instead of D(Y₋ᵢ))
    _assert_biased(lambda r, d: -cr.additive_credit(d), R_SOFT, n, _e_diversity)
    if n >= 3:
        own = lambda r, d: (2 / n) * (d.sum(-1) / (n - 1) - cr.set_diversity(d)[:, None])  # noqa: E731
        _assert_biased(own, R_SOFT, n, _e_diversity)


@pytest.mark.parametrize("n", [2, 3])
def test_additive_credit_with_rewards_is_unbiased(n):
    objective = lambda pi: pi @ R_SOFT + _e_diversity(pi)  # noqa: E731  E[mean r] + E[D]
    _assert_unbiased(lambda r, d: cr.additive_credit(d, r), R_SOFT, n, objective)
    _assert_biased(lambda r, d: cr.additive_credit(d), R_SOFT, n, objective)  # planted: r dropped


@pytest.mark.parametrize("n", [2, 3, 4])
def test_multiplicative_credit_is_unbiased(n):
    _assert_unbiased(cr.marginal_credit, R_SOFT, n, _e_product(R_SOFT, n))

    # planted: the set score shared by every member minus the group mean (cancels to 0) ...
    def shared(r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        f = cr.set_score(r, d)[:, None].expand_as(r)  # (1, N) the same f(Y) for every member
        return f - f.mean(-1, keepdim=True)

    _assert_biased(shared, R_SOFT, n, _e_product(R_SOFT, n))
    # ... the multiplicative objective silently using additive credit, and a flipped sign
    _assert_biased(lambda r, d: cr.loo_credit(d), R_SOFT, n, _e_product(R_SOFT, n))
    _assert_biased(lambda r, d: -cr.marginal_credit(r, d), R_SOFT, n, _e_product(R_SOFT, n))


@pytest.mark.parametrize(("n", "k"), [(2, 1), (3, 1), (3, 2), (4, 2), (4, 3)])
@pytest.mark.parametrize("r", [R_BIN, R_SOFT], ids=["binary", "fractional"])
def test_passk_credit_is_unbiased_for_pass_at_k(n, k, r):
    # binary r: E[max of k] = pass@k = 1 − (1 − πᵀr)^k; checked against that form too
    if r is R_BIN:
        assert float(_e_max_at_k(r, k)(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))) == (
            pytest.approx(1 - 0.8**k)
        )
    _assert_unbiased(lambda r_, d: cr.passk_credit(r_, k), r, n, _e_max_at_k(r, k))
    _assert_biased(lambda r_, d: -cr.passk_credit(r_, k), r, n, _e_max_at_k(r, k))


@pytest.mark.parametrize(
    ("n", "k", "moves"), [(3, 2, False), (4, 2, True), (4, 3, False), (5, 2, True)]
)
def test_papers_advantage_scale_fixed_unnormalised_and_policy_dependent_with_sigma(n, k, moves):
    # With binary rewards every symmetric credit's expectation is (some scale)·∇pass@k for one
    # prompt: Σ_o π_o(e_o − π)·E[c | r_o] only sees r_o ∈ {0, 1}. What matters is the scale.
    # m_i − ρ̂(Y) (baseline containing y_i): the constant (N−k)/k, whatever the policy.
    # σ-normalised (the paper's exact advantage): a scale that moves with π, so across prompts it
    # reweights them and is not the gradient of the summed pass@k.
    def scale(credit_fn: Credit, theta: list[float]) -> float:
        got = _estimator_mean(credit_fn, R_BIN, n, theta)
        want = _exact_grad(_e_max_at_k(R_BIN, k), theta)
        ratio = got / want
        assert torch.allclose(ratio, ratio[0].expand(3), atol=1e-9)  # parallel to ∇pass@k
        return float(ratio[0])

    unnorm = lambda r, d: cr.passk_credit(r, k) * (n - k) / k  # noqa: E731  m_i − ρ̂(Y)
    paper = lambda r, d: cr.passk_advantage(r, k)  # noqa: E731
    other = [-1.0, 0.4, 1.2]
    assert scale(unnorm, THETA) == pytest.approx((n - k) / k) == scale(unnorm, other)
    # N = k + 1: a group with c ≥ 2 passes has ρ̂ = 1 and all-zero advantages, so only c = 1 groups
    # count, all with the same σ: the scale is then constant too.
    assert (abs(scale(paper, THETA) - scale(paper, other)) > 1e-2) is moves


def test_objective_credit_routes_each_objective_to_its_own_credit():
    g = torch.Generator().manual_seed(2)
    r = torch.rand(2, 4, generator=g, dtype=torch.float64)
    a = torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
    d = (a + a.transpose(-1, -2)) / 2 * (1 - torch.eye(4, dtype=torch.float64))
    cases = {
        "additive": cr.loo_credit(d) + cr.mean_reward_credit(r),
        "multiplicative": cr.marginal_credit(r, d),
        "passk": cr.passk_credit(r, 2),
    }
    got = {name: cr.objective_credit(name, r, d, k=2) for name in cases}
    for name, want in cases.items():
        assert torch.equal(got[name], want), name
        others = [o for o in cases if o != name]
        assert not any(torch.allclose(got[name], cases[o]) for o in others), name
    assert torch.equal(cr.objective_credit("additive", None, d), cr.loo_credit(d))
    assert torch.equal(
        cr.objective_credit("passk", (r > 0.5).double(), None, k=2, threshold=1.0),
        cr.passk_credit((r > 0.5).double(), 2),
    )
    with pytest.raises(ValueError, match="needs rewards and distances"):
        cr.objective_credit("multiplicative", None, d)
    with pytest.raises(ValueError, match="needs rewards and k"):
        cr.objective_credit("passk", r, d)
    with pytest.raises(ValueError, match="unknown 'grpo'"):
        cr.objective_credit("grpo", r, d)
