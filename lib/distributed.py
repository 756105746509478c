"""Data parallelism for the training stages under `accelerate launch` (or torchrun).

`accelerate launch --num_processes K -m stages.train_polychromic ...` starts K processes; each
takes its own `train.batch_size` slice of every global micro-batch (batch_size × K examples, in
the single-process data order), draws its examples' polychromic samples (seeds are per example,
so no two ranks ever draw the same sample), and after backward the LoRA gradients are all-reduced
(summed, then divided by K). The CE part of each rank's loss is weighted by its share of the
global reference tokens, so the averaged gradient is the global token-mean CE gradient: K
processes at batch b train like one process at batch K·b (tests check it to float rounding).
Only rank 0 logs, checkpoints and writes the adapter.

Why not `Accelerator.prepare` / DDP: the polychromic step calls the decoder directly (packed
forward, sampling in eval mode), which a DDP wrapper's forward would not see; an explicit
all-reduce of the LoRA gradients (a few MB) is simpler and exact. `accelerate.PartialState` still
does the process-group setup (NCCL on GPUs, gloo on CPU) from whatever the launcher put in the
environment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, value: float) -> float:
        """Sum of a Python number over ranks (the number itself with one process)."""
        if self.world == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(t)
        return float(t.item())

    def mean_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace every parameter's gradient by its mean over ranks (one flat all-reduce)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads]).to(_comm_device())
        torch.distributed.all_reduce(flat)
        flat /= self.world
        at = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[at : at + n].view_as(g).to(device=p.device, dtype=g.dtype)
            at += n

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def _comm_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo moves CPU tensors.
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_dist(cpu: bool) -> Dist:
    """The launcher's process group (a no-op `Dist()` for a plain `python -m ...` run)."""
    if world_size() == 1:
        return Dist()
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.device.type == "cuda":
        torch.cuda.set_device(state.device)
    return Dist(state.process_index, state.num_processes, state.local_process_index)
