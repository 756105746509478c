"""lib.train.losses: exact values on hand-built cases (GEM, log-probs, distances, λ term).

The credit and set-score tests live in tests/test_credit.py, beside lib/train/credit.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from lib.chat import IGNORE_INDEX
from lib.train import losses

# -- distances --------------------------------------------------------------------------------


def test_semantic_distances():
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    d = losses.semantic_distances(e)[0]
    assert torch.allclose(d, torch.tensor([[0.0, 0, 1], [0, 0, 1], [1, 1, 0]]))


def test_lexical_distances():
    d = losses.lexical_distances([["a b c", "A  B d", "a b c"], ["", "", "x"]])
    # {<s>a, ab, bc, c</s>} vs {<s>a, ab, bd, d</s>}: 2 shared of 6
    assert float(d[0, 0, 1]) == pytest.approx(2 / 3)
    assert float(d[0, 0, 2]) == 0.0
    assert float(d[1, 0, 1]) == 0.0  # two empty samples are identical, not NaN
    assert float(d[1, 0, 2]) == 1.0
    assert torch.equal(d, d.transpose(-1, -2))


# -- token log-probs, CE, diversity term ------------------------------------------------------


def test_sequence_logprob_uniform():
    logits = torch.zeros(2, 4, 8)  # uniform over 8 tokens
    labels = torch.tensor([[IGNORE_INDEX, 3, 5, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 1, 2]])
    lp = losses.sequence_logprob(logits, labels)
    assert lp.tolist() == pytest.approx([2 * math.log(1 / 8)] * 2)
    assert float(losses.ce_loss(logits, labels)) == pytest.approx(math.log(8))


def test_ce_loss_rejects_unlabelled_batch():
    with pytest.raises(ValueError):
        losses.ce_loss(torch.zeros(1, 3, 4), torch.full((1, 3), IGNORE_INDEX))


# -- GEM --------------------------------------------------------------------------------------


def _one_token(z: list[float], y: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.zeros(1, 2, len(z), dtype=torch.float64)
    logits[0, 0] = torch.tensor(z, dtype=torch.float64)
    return logits.requires_grad_(True), torch.tensor([[IGNORE_INDEX, y]])


def test_gem_exact_value_and_gradient():
    logits, labels = _one_token([0.0, math.log(2.0), 0.0], 1)  # p = [1/4, 1/2, 1/4]
    # β = 1/2: q ∝ p² = [1, 4, 1]/6; loss = ln 2 + (1/6)ln¼ + (4/6)ln½ + (1/6)ln¼ = −(1/3)ln 2
    loss = losses.gem_loss(logits, labels, beta=0.5)
    assert float(loss) == pytest.approx(-math.log(2) / 3)
    loss.backward()
    # ∂loss/∂z = q − onehot(y*)
    assert logits.grad[0, 0].tolist() == pytest.approx([1 / 6, 4 / 6 - 1, 1 / 6])


def test_gem_beta_one_has_ce_gradient():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 5, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[:, :2] = IGNORE_INDEX
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    losses.gem_loss(a, labels, beta=1.0).backward()
    losses.ce_loss(b, labels).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    assert a.grad.abs().sum() > 0


def test_gem_logsigmoid_variant_hand_value():
    z = [0.0, math.log(2.0), 0.0]
    logits, labels = _one_token(z, 1)
    p = [0.25, 0.5, 0.25]
    q = p  # β = 1
    w = [1 / (1 + math.exp(-0.01 * (zv - z[1]))) for zv in z]
    want = -sum(q[v] * w[v] * (math.log(p[1]) - math.log(p[v])) for v in range(3))
    assert float(losses.gem_loss(logits, labels, beta=1.0, h="logsigmoid")) == pytest.approx(want)
    with pytest.raises(ValueError):
        losses.gem_loss(logits, labels, h="cubic")


# -- the trainer's sample terms: per-token λ term, k2 KL ----------------------------------------


def test_policy_term_is_per_sample_token():
    # Two examples, two samples each, of 1, 3, 2, 2 tokens: Σ|y| = 8.
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]], requires_grad=True)
    credit = torch.tensor([[0.5, -0.5], [0.2, 0.0]], requires_grad=True)
    term = losses.policy_term(credit, logp, torch.tensor(8))
    # −(0.5·−1 + −0.5·−2 + 0.2·−3 + 0·−4) / 8 = −(−0.5 + 1 − 0.6) / 8 = 0.1 / 8
    assert float(term.detach()) == pytest.approx(0.0125)
    term.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.0625, 0.0625], [-0.025, 0.0]]))
    assert credit.grad is None  # stop-gradient on the credit
    # Twice the tokens at the same log-prob per token and the same credit: the same term (the
    # old per-example sum doubled, so λ's strength grew with the sample length).
    assert float(losses.policy_term(credit, 2 * logp.detach(), torch.tensor(16))) == pytest.approx(
        0.0125
    )
    with pytest.raises(ValueError, match="no sample token"):
        losses.policy_term(credit, logp, torch.tensor(0))


def test_kl_k2_value_and_gradient():
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.5, -2.0, -0.25, -1.0], dtype=torch.float64)
    kl = losses.kl_k2(logp, ref)
    # ½·mean(Δ²), Δ = [0.5, 0, −0.25, −2]: ½·(0.25 + 0 + 0.0625 + 4)/4 = 0.5390625
    assert float(kl) == pytest.approx(0.5390625, abs=1e-15)
    kl.backward()
    # ∂/∂logp_t = Δ_t / S: the REINFORCE weight (log π − log π_ref) of ∇KL, per token
    assert logp.grad.tolist() == pytest.approx([0.125, 0.0, -0.0625, -0.5])
    zero = losses.kl_k2(ref.clone().requires_grad_(True), ref)
    assert float(zero) == 0.0  # π = π_ref (LoRA B = 0): value 0 ...
    zero.backward()  # ... and gradient 0


def test_kl_k2_gradient_is_unbiased_kl_gradient_on_policy():
    # One state, a 3-token vocabulary, π = softmax(z): E_{y~π}[∇_z k2(y)] = ∇_z KL(π‖π_ref), by
    # enumerating y (exact expectation), against autograd of the closed-form KL.
    z = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([0.1, 0.5, 0.4], dtype=torch.float64).log()
    logp = z.log_softmax(-1)
    expected = sum(
        logp.exp()[y].detach()
        * torch.autograd.grad(losses.kl_k2(logp[y : y + 1], ref[y : y + 1]), z, retain_graph=True)[
            0
        ]
        for y in range(3)
    )
    kl = (logp.exp() * (logp - ref)).sum()
    (exact,) = torch.autograd.grad(kl, z)
    assert torch.allclose(expected, exact, atol=1e-12)
