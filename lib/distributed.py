"""Ranks under `accelerate launch` (or torchrun): `Dist` (rank, world, small collectives) and
`init_dist`, the launcher's process group for the generate stage (`lib.generate`: each rank samples
a share of the inputs, rank 0 gathers and writes). Training goes through an `Accelerator` and its
DDP/FSDP wrapper instead: `lib.train.engine`, which says where the wrapper syncs gradients and
where it cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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
        t = torch.tensor([float(value)], dtype=torch.float64, device=comm_device())
        torch.distributed.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's (picklable) `obj`, in rank order, on rank 0; None on the others."""
        if self.world == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out


def init_dist(cpu: bool) -> Dist:
    """The launcher's process group without an Accelerator (sharded generation); a no-op `Dist()`
    for a plain `python -m ...` run."""
    if world_size() == 1:
        return Dist()
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    if state.device.type == "cuda":
        torch.cuda.set_device(state.device)
    return Dist(state.process_index, state.num_processes, state.local_process_index)


def comm_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo moves CPU tensors.
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
