"""CPU float32 linear layers through oneDNN (lib/onednn.py): the same function as `F.linear`.

The reference is float64 arithmetic (x·Wᵀ + b and ∂L/∂x = g·W computed in double), not the
routed code; float32 against it agrees to ~1e-6 relative whichever kernel ran.
"""

from __future__ import annotations

import pytest
import torch

from lib import onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="torch built without oneDNN")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12), "transposed"])
def test_routed_linear_matches_float64_forward_and_input_gradient(shape, bias):
    g = torch.Generator().manual_seed(0)
    if shape == "transposed":  # a non-contiguous input, as a transposed activation would be
        x = torch.randn(12, 9, generator=g).t()
    else:
        x = torch.randn(*shape, generator=g)
    x.requires_grad_(True)
    lin = torch.nn.Linear(12, 10, bias=bias).requires_grad_(False)  # out ≠ in: catches a Wᵀ slip
    y = lin(x)
    assert y.grad_fn is not None and "FrozenLinear" in type(y.grad_fn).__name__  # routed
    up = torch.randn(y.shape, generator=g)
    (gx,) = torch.autograd.grad(y, x, up)

    want = x.detach().double() @ lin.weight.double().t()
    if bias:
        want = want + lin.bias.double()
    assert y.shape == want.shape and _rel(y, want) < 1e-6
    assert _rel(gx, up.double() @ lin.weight.double()) < 1e-6


def test_trainable_weight_stays_on_autograd_and_gets_its_gradient():
    # LoRA's matrices are trainable: not routed, so their weight gradient still exists.
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    lin = torch.nn.Linear(4, 3)
    lin(x).sum().backward()
    assert lin.weight.grad is not None
    assert _rel(lin.weight.grad, torch.ones(6, 3).double().t() @ x.double()) < 1e-6


def test_no_grad_and_repeated_calls_give_the_same_bits():
    x = torch.randn(33, 64, generator=torch.Generator().manual_seed(2))
    lin = torch.nn.Linear(64, 48).requires_grad_(False)
    with torch.no_grad():
        a, b = lin(x), lin(x)
    with torch.inference_mode():
        c = lin(x)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert _rel(a, x.double() @ lin.weight.double().t() + lin.bias.double()) < 1e-6


def test_disable_restores_the_dense_kernel_and_enable_is_idempotent():
    import torch.nn.functional as F

    try:
        onednn.disable()
        assert F.linear is not onednn.linear
        x = torch.randn(2, 3, requires_grad=True)
        y = torch.nn.Linear(3, 2).requires_grad_(False)(x)
        assert "FrozenLinear" not in type(y.grad_fn).__name__
    finally:
        assert onednn.enable() and onednn.enable()
    assert F.linear is onednn.linear


def test_input_gradient_follows_an_in_place_change_of_the_frozen_weight():
    # The backward reuses a cached Wᵀ; an in-place edit (a new version) must not reuse the old one.
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), requires_grad=True)
    lin = torch.nn.Linear(6, 5, bias=False).requires_grad_(False)
    up = torch.ones(4, 5)
    (first,) = torch.autograd.grad(lin(x), x, up)
    with torch.no_grad():
        lin.weight.mul_(-2.0)
    (second,) = torch.autograd.grad(lin(x), x, up)
    assert _rel(first, up.double() @ (lin.weight.double() / -2.0)) < 1e-6
    assert _rel(second, up.double() @ lin.weight.double()) < 1e-6


def test_a_trainable_weight_is_routed_when_no_graph_is_recorded():
    # Generation and the encoders run models whose weights still require grad, under no_grad.
    lin = torch.nn.Linear(5, 4)
    x = torch.randn(3, 5)
    with torch.no_grad():
        y = lin(x)
    assert _rel(y, x.double() @ lin.weight.double().t() + lin.bias.double()) < 1e-6
    calls = []
    real = onednn._mm
    try:
        onednn._mm = lambda *a: calls.append(1) or real(*a)
        with torch.no_grad():
            lin(x)
        lin(x).sum().backward()  # recorded, trainable: stays on F.linear
    finally:
        onednn._mm = real
    assert calls == [1] and lin.weight.grad is not None
