"""`PackedLM`: the trainer's one differentiable forward, as a module a DDP/FSDP wrapper can hold.

The packed, padding-free forward calls the decoder and the LM head directly (no logits at prompt
positions, a 4-D additive mask for the tree pack). Written as a method of the trainer it bypassed
any wrapper: DDP's reducer never saw the forward (no gradient hooks armed) and FSDP never
gathered the sharded layers. As the `forward` of a module that `accelerator.prepare` wraps, every
training forward goes through the wrapper; sampling keeps the bare PeftModel (`self.model`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


def attention_backends(device: torch.device) -> AbstractContextManager:
    """sdpa's kernels for the packed pass: on CUDA every backend but cuDNN's. cuDNN builds an
    execution plan per input shape, and the packed rows change shape every step: on an H200 at
    Qwen3-8B shapes that was ~1.3 ms of host time per attention call (36 layers, forward and
    backward, 95 ms of a 0.4 s baseline step whose GPU work is 89 ms) and a 1.5-2.5 s step
    whenever a new shape needed a new plan (bench/README.md, "Run on two H200s"). The
    memory-efficient kernel takes the same additive mask with no per-shape planning. A CPU
    keeps its backends, so CPU results are unchanged."""
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )


class PackedLM(torch.nn.Module):
    def __init__(self, model: Any):  # a PeftModel; its LoRA layers are injected in place
        super().__init__()
        self.model = model
        base = model.get_base_model()
        # FSDP's transformer auto-wrap policy reads the wrapped module's `_no_split_modules`.
        self._no_split_modules = getattr(base, "_no_split_modules", None)

    def forward(
        self,
        input_ids: torch.Tensor,  # (R, W)
        attention_mask: torch.Tensor,  # (R, 1, W, W) additive
        position_ids: torch.Tensor,  # (R, W)
        keep: torch.Tensor,  # (K,) flat indices into (R·W) of the predicted positions
        copies: int = 1,
    ) -> torch.Tensor:
        """Logits (copies·K, V) at the kept positions; copies = 2 runs the rows twice in one
        batch, (2R, W), for the fused KL reference (`lora_row_scale` scales the second copy)."""
        base = self.model.get_base_model()
        rows, width = input_ids.shape
        with attention_backends(input_ids.device):
            hidden = base.get_decoder()(
                input_ids=input_ids.repeat(copies, 1),
                attention_mask=attention_mask.repeat(copies, 1, 1, 1),
                position_ids=position_ids.repeat(copies, 1),
                use_cache=False,
            ).last_hidden_state  # (copies·R, W, H)
        keep = torch.cat([keep + c * rows * width for c in range(copies)])  # (copies·K,)
        logits = base.get_output_embeddings()(hidden.flatten(0, 1)[keep])  # (copies·K, V)
        cap = getattr(base.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
