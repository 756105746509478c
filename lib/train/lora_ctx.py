"""Context managers over a PEFT model's LoRA layers for the trainer's passes: dropout off (on-policy
log-probs), adapters off (the base model's reference), a per-row scale of the LoRA update (the
fused KL pass)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


@contextlib.contextmanager
def dropout_off(model: torch.nn.Module) -> Iterator[None]:
    """Every nn.Dropout (LoRA's included) in eval mode, the rest of the model as it was (so
    gradient checkpointing, active only in train mode, stays on)."""
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in drops:
        m.eval()
    try:
        yield
    finally:
        for m in drops:
            m.train()


@contextlib.contextmanager
def adapters_off(layers: Sequence[torch.nn.Module]) -> Iterator[None]:
    """The base model's forward through a PEFT model: each LoRA layer in `layers` skips its
    adapters (the flag PEFT's own `disable_adapter()` sets). That context manager also surveys the
    whole model (`get_model_status`) and flips `requires_grad` on every adapter weight and back,
    ~25 ms of Python a call at 135M, which the no-grad reference pass has no use for."""
    was = [m._disable_adapters for m in layers]
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m, w in zip(layers, was, strict=True):
            m._disable_adapters = w


@contextlib.contextmanager
def lora_row_scale(layers: Sequence[torch.nn.Module], scale: torch.Tensor) -> Iterator[None]:
    """Every LoRA update (B·A·x·s) of the batch's row r multiplied by scale[r] (rows, ): one forward
    hook on each active lora_B. Plain LoRA Linear layers only (a DoRA or other variant, or an
    embedding adapter, computes its update elsewhere): anything else raises."""
    handles = []

    def hook(_module, _inputs, out):  # out (rows, T, d_out)
        return out * scale.to(out.dtype).view(-1, *([1] * (out.dim() - 1)))

    try:
        for m in layers:
            if getattr(m, "lora_variant", None) or not hasattr(m, "lora_B"):
                raise ValueError(
                    f"loss.kl_pass fused: {type(m).__name__} is not a plain LoRA layer; "
                    "use loss.kl_pass: separate"
                )
            for name in m.active_adapters:
                if name in m.lora_B:
                    handles.append(m.lora_B[name].register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every PEFT tuner layer of `model` (LoRA's Linear, Embedding, ...)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
