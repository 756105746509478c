"""Fewer, cheaper kernels for `StaticDecoder`'s graphed decode step on CUDA (issue 20).

A profile of one Qwen3-8B decode step at 320 rows on an H200 (bench/decode_profile.py, 2,324
kernels, 19.5 ms) put 5.2 ms in attention, where cuDNN's sdpa ran a 64-query tile for the 4
query heads that share a KV head (143 us a layer to read 2.9 MB of keys and values), and ~3 ms
in RMSNorm, which transformers writes as eight elementwise kernels (upcast, square, mean, add,
rsqrt, multiply, downcast, weight) run 145 times a step; `F.rms_norm` does it in one. Both are replaced here for the decode
step alone, on CUDA alone: CPU steps keep transformers' own modules, so the CPU decoder samples
exactly what `lib.sampling.sample` samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

# RMSNorm classes whose forward is exactly weight * (x32 * rsqrt(mean(x32²) + eps)).to(dtype)
# (Gemma's 1 + weight is not, and stays as it is).
_STANDARD_RMSNORM = frozenset(
    {"LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm", "Phi3RMSNorm"}
)


def matmul_decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """softmax(q kᵀ · scale, masked) v for one new token over grouped KV heads, as two batched
    matmuls (Vaswani et al. 2017, eq. 1), with the G = Hq / Hkv query heads of a KV head stacked
    as G rows against it, so the cache is read once and never repeated.

    query (B, Hq, 1, D), key/value (B, Hkv, L, D), mask (B, 1, 1, L) bool (True: attend) →
    (B, Hkv, G, D). Scores in the model dtype, softmax in float32, as transformers' eager
    attention computes them.
    """
    b, hq, _, d = query.shape
    hkv = key.shape[1]
    q = query.reshape(b, hkv, hq // hkv, d)  # (B, Hkv, G, D)
    scores = torch.matmul(q, key.transpose(-1, -2))  # (B, Hkv, G, L)
    if scores.element_size() < 4:  # half precision: the softmax in float32
        scores = scores.float()
    scores = scores * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(value.dtype)  # (B, Hkv, G, L)
    return torch.matmul(probs, value)  # (B, Hkv, G, D)


def _rms_norm_forward(module: torch.nn.Module):  # noqa: ANN202 - a bound forward
    weight, eps = module.weight, float(module.variance_epsilon)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if weight.dtype == x.dtype:
            # One kernel: float32 statistics and the weight applied before a single rounding to
            # the input dtype (transformers rounds twice: before and after the weight). The
            # upcast-and-back form cost 365 copy kernels, ~1.2 ms, of a 16.4 ms 8B step.
            return F.rms_norm(x, (x.shape[-1],), weight=weight, eps=eps)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)  # a float32 model's bf16 weight, say
        return weight * y.to(x.dtype)

    return forward


@contextmanager
def fused_rms_norms(model: torch.nn.Module) -> Iterator[int]:
    """Every standard RMSNorm of `model` computed by `F.rms_norm` for the duration; yields how
    many were swapped. Their own forward comes back afterwards, however the block exits."""
    swapped = [
        m
        for m in model.modules()
        if type(m).__name__ in _STANDARD_RMSNORM and hasattr(m, "variance_epsilon")
    ]
    for m in swapped:
        m.forward = _rms_norm_forward(m)  # an instance attribute shadows the class's method
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            del m.forward
