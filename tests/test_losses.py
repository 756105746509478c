"""lib.train.losses: exact values on hand-built cases (GEM, log-probs, distances, λ term).

The credit and set-score tests live in tests/test_credit.py, beside lib/train/credit.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from lib.chat import IGNORE_INDEX
from lib.train import losses

# -- quality -----------------------------------------------------------------------------------


def test_quality_scores_clip_to_unit_interval():
    s = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]]])  # (1, 3, 2)
    ref = torch.tensor([[1.0, 0.0]])
    assert losses.quality_scores(s, ref)[0].tolist() == pytest.approx([1.0, 0.0, 0.6])


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


def test_diversity_term_gradient_is_minus_credit_over_batch():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]], requires_grad=True)
    credit = torch.tensor([[0.5, -0.5], [0.2, 0.0]], requires_grad=True)
    term = losses.diversity_term(credit, logp)
    assert float(term.detach()) == pytest.approx(-(0.5 * -1 + -0.5 * -2 + 0.2 * -3) / 2)
    term.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, 0.25], [-0.1, 0.0]]))
    assert credit.grad is None  # stop-gradient on the credit


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
