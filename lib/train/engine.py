"""Data parallelism for the training stages under `accelerate launch` (or torchrun): the `Engine`.

`accelerate launch --num_processes K -m stages.train_polychromic ...` starts K processes; each
takes its own `train.batch_size` slice of every global micro-batch (batch_size × K examples, in
the single-process data order) and draws its examples' polychromic samples (seeds are per example,
so no two ranks ever draw the same sample). The trainer's packed forward is a module
(`lib.train.packed_lm.PackedLM`) that `accelerator.prepare` wraps: DDP by default, FSDP when the
launcher's accelerate config says so (configs/accelerate/). The wrapper's gradient hooks average
the LoRA gradients over ranks; the CE part of each rank's loss is weighted by its share × K of the
global reference tokens (`objective.Shares`), so DDP's *mean* is the global token-mean gradient: K
processes at batch b train like one process at batch K·b (tests check it to float rounding).
Only rank 0 logs, checkpoints and writes the adapter.

Where the wrapper cannot serve, an explicit all-reduce remains (`Engine.mean_grads`): the steps
that measure each loss term's gradient norm take one `torch.autograd.grad` per term, which hands
the gradients back instead of accumulating them into `.grad`, so DDP's reducer (hooked on that
accumulation) never fires. Those steps run forward and backward under `no_sync` and average the
summed gradients once at the end, the same mean DDP computes. Under FSDP the per-term path cannot
work at all (sharded parameters), nor can sampling (every decoded token would be a collective over
ranks decoding different lengths): polychromic refuses FSDP with a message (`Trainer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from lib.distributed import Dist, comm_device
from lib.train.packed_lm import PackedLM


class Engine:
    """The trainer's packed forward (`module`: PackedLM, wrapped or bare) and how its gradients
    meet across ranks. `local()` has no accelerator (one process, or a unit test's fake ranks,
    whose gradients stay local); `launch()` is the stages' engine."""

    def __init__(self, dist: Dist, accelerator: Any = None):
        self.dist = dist
        self.accelerator = accelerator
        self.module: torch.nn.Module | None = None
        self.dtype: torch.dtype | None = None  # the model's, read before FSDP flattens it

    @classmethod
    def local(cls, model: Any, dist: Dist | None = None) -> Engine:
        engine = cls(dist or Dist())
        engine.wrap(model)
        return engine

    @classmethod
    def launch(cls, cpu: bool) -> Engine:
        """An `Accelerator` on the launcher's process group (NCCL on GPUs, gloo on CPU; nothing
        for a plain `python -m ...` run) and its plugin (DDP, or FSDP from the accelerate config).
        Precision is `model.dtype`'s alone (mixed_precision no); the model is already on its
        device (`lib.models.resolve_device` reads LOCAL_RANK), so accelerate moves nothing."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # Buffers (rotary tables) are the same on every rank: no broadcast before each forward.
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
        acc = Accelerator(
            cpu=cpu, mixed_precision="no", device_placement=False, kwargs_handlers=[ddp]
        )
        # One process gets a bare "cuda" (no index), which set_device refuses: it keeps the current one.
        if acc.device.type == "cuda" and acc.device.index is not None:
            torch.cuda.set_device(acc.device)
        dist = Dist(acc.process_index, acc.num_processes, acc.local_process_index)
        return cls(dist, acc)

    @property
    def sharded(self) -> bool:
        """FSDP: parameters, gradients and optimizer state sharded over ranks."""
        if self.accelerator is None:
            return False
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def wrap(self, model: Any) -> None:
        """`accelerator.prepare(PackedLM(model))`: DDP, FSDP or (one process) the module itself."""
        packed = PackedLM(model)
        self.dtype = model.get_input_embeddings().weight.dtype
        if self.accelerator is None:
            self.module = packed
            return
        if self.sharded:
            from peft.utils.other import fsdp_auto_wrap_policy

            # Each LoRA leaf its own FSDP unit (float32, trainable) apart from the decoder
            # layers (bf16 or 4-bit storage, frozen): FSDP flattens one dtype, and without
            # use_orig_params one requires_grad, per unit.
            plugin = self.accelerator.state.fsdp_plugin
            plugin.auto_wrap_policy = fsdp_auto_wrap_policy(model)
        self.module = self.accelerator.prepare(packed)

    def sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Forward and backward inside: the wrapper averages gradients over ranks when `enabled`,
        else they accumulate locally (a non-final micro-batch, or a per-term norm step)."""
        if enabled or self.accelerator is None or self.dist.world == 1:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.module)

    def mean_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Every gradient replaced by its mean over ranks (one flat all-reduce); only after
        micro-batches run under `sync(False)` whose backward the wrapper never saw."""
        if self.accelerator is None or self.dist.world == 1:
            return
        if self.sharded:
            raise RuntimeError("an explicit gradient all-reduce under FSDP (sharded gradients)")
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads]).to(comm_device())
        torch.distributed.all_reduce(flat)
        flat /= self.dist.world
        at = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[at : at + n].view_as(g).to(device=p.device, dtype=g.dtype)
            at += n

    def clip_grad_norm_(self, params: Sequence[torch.nn.Parameter], max_norm: float):
        """The global gradient norm, clipped to max_norm (FSDP: over every rank's shards)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if isinstance(self.module, FullyShardedDataParallel):  # FSDP1: norms of flat shards
            return self.module.clip_grad_norm_(max_norm)
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def adapter_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP the full model state dict on rank 0 (a collective: every rank calls it),
        for `PeftModel.save_pretrained(state_dict=...)`; None when the local model holds it."""
        if not self.sharded:
            return None
        state = self.accelerator.get_state_dict(self.module)
        prefix = "model."  # PackedLM's attribute
        return {k.removeprefix(prefix): v for k, v in state.items()}
