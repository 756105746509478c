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
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Rows of the LM head per chunk when log-probs are taken in chunks (`PackedLM.forward(chunk=...)`,
# the trainer's CUDA path): 2,048 rows of a 151,936-token vocabulary are 1.2 GB of float32 logits.
LOGPROB_CHUNK_ROWS = 2048


def logprob_chunk(device: torch.device, sharded: bool) -> int:
    """Rows per LM-head chunk for the trainer's log-probs: chunks on CUDA; none under FSDP (a
    chunk's recompute in the backward would not see the resharded head) or on a CPU, which keeps
    the one whole pass and its bits."""
    return LOGPROB_CHUNK_ROWS if device.type == "cuda" and not sharded else 0


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


class _KeptRows(torch.autograd.Function):
    """x[keep] for x (n, H) and keep (K,) with repeats, whose gradient adds a repeated row's
    grads in `keep`'s order. The packed pass keeps the last prompt position once per sample (its
    N samples share the prompt), and `x[keep]`'s backward, `index_put_(accumulate=True)`, adds
    the repeats on a CPU with atomic float adds from several threads, in whatever order the
    threads reach them: under CPU load the same step gave another gradient (the adapter's bytes
    changed from step 4 of the default run, `scripts/replay_step.py`). `index_add_` adds them
    one index after another. CUDA keeps `index_put_`, whose accumulate sorts the indices first."""

    @staticmethod
    def forward(ctx, x, keep):  # noqa: ANN001, ANN205
        ctx.save_for_backward(keep)
        ctx.rows = x.shape[0]
        return x.index_select(0, keep)  # (K, H)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (keep,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.rows, *grad.shape[1:]))  # (n, H)
        if grad.is_cuda:
            return out.index_put_((keep,), grad, accumulate=True), None
        return out.index_add_(0, keep, grad), None


def kept_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """x[keep] (K, H) of x (n, H), the same bits forward, and a gradient that sums repeated rows
    in `keep`'s order (`_KeptRows`)."""
    return _KeptRows.apply(x, keep)


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
        targets: torch.Tensor | None = None,  # (K,) the token predicted at each kept position
        chunk: int = 0,
    ) -> torch.Tensor:
        """Logits (copies·K, V) at the kept positions; copies = 2 runs the rows twice in one
        batch, (2R, W), for the fused KL reference (`lora_row_scale` scales the second copy).

        With `targets`: log p(target) (copies·K,) instead, computed in float32. chunk > 0 takes
        the LM head and its log-softmax `chunk` rows at a time, each recomputed in the backward
        (activation checkpointing), so no (copies·K, V) tensor ever exists: at the 0.5B coder's
        shapes (~11k rows × 151,936) that was ~25 GB of float32 logits, their log-softmax and
        gradient, most of a training process's GPU memory."""
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
        hidden = kept_rows(hidden.flatten(0, 1), keep)  # (copies·K, H)
        if targets is None:
            return self._logits(hidden)  # (copies·K, V)
        targets = targets.repeat(copies)  # (copies·K,)
        if chunk <= 0:
            return self._target_logprobs(hidden, targets)
        return torch.cat(
            [
                checkpoint(
                    self._target_logprobs,
                    hidden[i : i + chunk],
                    targets[i : i + chunk],
                    use_reentrant=False,
                )
                for i in range(0, hidden.shape[0], chunk)
            ]
        )  # (copies·K,)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        base = self.model.get_base_model()
        logits = base.get_output_embeddings()(hidden)  # (n, V)
        cap = getattr(base.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self._logits(hidden)  # (n, V)
        z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return -F.cross_entropy(z, targets, reduction="none")  # (n,) log p(target)
