"""float32 linear layers on the CPU through oneDNN instead of MKL's sgemm (`enable()`).

PyTorch sends a float32 `F.linear` on the CPU to MKL, whose sgemm takes its AVX2 code path on AMD
processors: ~100 GFLOP/s a core on this project's CI machine (AMD EPYC, AVX-512), where oneDNN's
float32 kernels, shipped in the same torch wheel, reach ~240 (bench/cpu_linear.py). Matrix
products are most of every model stage's time (training, generation, the judge, the evaluation
encoders), so each stage process routes them through oneDNN. Still float32 arithmetic: the results
differ from MKL's in the last bits (another summation order), the same bits on every run on one
processor kind.

Routed: every float32 product that records no graph (generation, the judge, the encoders, no-grad
passes), and under autograd those whose weight is frozen (the base model's projections and LM head
while LoRA trains). A trainable weight stays on `F.linear`: LoRA's rank-16 slivers gain nothing,
and autograd keeps computing their weight gradients as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakTensorKeyDictionary

from lib import vml

_DENSE = F.linear  # the original, kept for everything that is not routed


def _mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # x (..., in), weight (out, in) → (..., out); oneDNN takes 2-D, contiguous inputs.
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.ops.mkldnn._linear_pointwise(flat, weight.contiguous(), bias, "none", [], "")
    return y.view(*x.shape[:-1], weight.shape[0])


# Wᵀ, contiguous, of each frozen weight that has been through a backward: ∂L/∂x = g·W is a linear
# with Wᵀ as its weight, and transposing W anew in every backward cost more than the product
# (the LM head: 113 MB a step at 135M). Frozen weights do not change while a model trains; the
# version counter still guards an in-place edit.
_TRANSPOSED = WeakTensorKeyDictionary()


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    hit = _TRANSPOSED.get(weight)
    if hit is not None and hit[0] == weight._version:
        return hit[1]
    wt = weight.t().contiguous()
    _TRANSPOSED[weight] = (weight._version, wt)
    return wt


class _FrozenLinear(torch.autograd.Function):
    """y = x·Wᵀ + b with W, b constants: the only gradient is ∂L/∂x = ∂L/∂y·W."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # noqa: ANN001, ANN205
        ctx.weight = weight  # not saved for backward: a constant, never modified by autograd
        return _mm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return _mm(grad, _transposed(ctx.weight), None), None, None  # (..., out)·(out, in)


def _fits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and x.dim() >= 2
        and x.shape[-1] > 0
        and (bias is None or bias.dtype == torch.float32)
        and not x.is_mkldnn
        and not weight.is_mkldnn
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN wherever no trainable weight or bias needs its gradient."""
    if not _fits(x, weight, bias):
        return _DENSE(x, weight, bias)
    trainable = weight.requires_grad or (bias is not None and bias.requires_grad)
    if not torch.is_grad_enabled() or not (trainable or x.requires_grad):
        return _mm(x, weight, bias)  # no graph to record (generation, encoders, no_grad passes)
    if trainable:
        return _DENSE(x, weight, bias)
    return _FrozenLinear.apply(x, weight, bias)


def available() -> bool:
    """Whether this torch build has oneDNN's linear kernel on this machine."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        _mm(torch.ones(1, 2), torch.ones(3, 2), None)
    except (RuntimeError, AttributeError):
        return False
    return True


def enable() -> bool:
    """Route `F.linear` (which `nn.Linear` calls) through `linear` for this process. True when
    routed; False (MKL stays) where oneDNN is unavailable. Every CPU model and encoder load calls
    it before computing, so it also resolves MKL's VML kernels first (`lib.vml`)."""
    vml.warm()
    if F.linear is linear:
        return True
    if not available():
        return False
    F.linear = linear
    return True


def disable() -> None:
    F.linear = _DENSE
