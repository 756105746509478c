"""Replay one training step K times from the same state: do the same inputs give the same bytes?

    PYTHONPATH=. AT=3 K=4 python scripts/replay_step.py --system polychromic \\
        --train data/split/train.parquet --val data/split/val.parquet --out /tmp/replay \\
        --params params.yaml --no-progress

Runs `stages.train` as usual until the trainer is about to take step AT + 1, then snapshots
everything the step reads (the LoRA params, the optimizer and scheduler state, the data cursor,
the torch, python and numpy RNGs: lib.train.checkpoint.trainer_state), takes the step K times from that snapshot and prints, per replay, the hash
of the gradient the optimizer saw, the hash of the params after it, and the step's CE and reward;
then "DISTINCT n". n > 1 is a nondeterministic step, and the first place to look is the first
field that differs. A diagnostic for the load-dependent CPU divergence (RESULTS.md, issue 18):
run alone, the default's step 4 replays to one gradient; with two busy processes beside it, the
replays alternate between two (2026-12-01).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import os
import sys

import torch

from lib.train import trainer as T
from lib.train.checkpoint import load_trainer_state, trainer_state


def _digest(tensors: list[torch.Tensor]) -> str:
    m = hashlib.sha256()
    for t in tensors:
        m.update(t.detach().contiguous().cpu().numpy().tobytes())
    return m.hexdigest()[:12]


def main() -> None:
    at, k = int(os.environ.get("AT", "3")), int(os.environ.get("K", "4"))
    take = T.Trainer.step

    def step(self: T.Trainer) -> dict[str, float]:
        if self.step_idx != at:
            return take(self)
        # What a resumed run restores (deep-copied: the optimizer's state_dict holds its live
        # moment tensors, which the step updates in place).
        snap = copy.deepcopy(trainer_state(self))
        seen = len(self.seen_batches)
        grads: dict[str, str] = {}
        optimizer_step = self.optimizer.step

        names = {id(p): n for n, p in self.model.named_parameters()}
        dump = os.environ.get("DUMP")

        def seen_step(*a: object, **kw: object) -> object:
            grads["g"] = _digest([p.grad for p in self.params])
            if dump:  # every gradient by parameter name, to compare two replays' tensors
                by_name = {names[id(p)]: p.grad.detach().clone() for p in self.params}
                torch.save(by_name, f"{dump}.{r}.{grads['g']}.pt")
            return optimizer_step(*a, **kw)

        self.optimizer.step = seen_step
        if os.environ.get("THREADS"):  # the replays with another intra-op thread count
            torch.set_num_threads(int(os.environ["THREADS"]))
        results: collections.Counter = collections.Counter()
        r = 0
        for r in range(k):
            load_trainer_state(self, copy.deepcopy(snap))
            del self.seen_batches[seen:]
            logs = take(self)
            key = (grads["g"], _digest(self.params), logs.get("ce"), logs.get("reward"))
            results[key] += 1
            print(
                f"replay {r}: grad {key[0]} params {key[1]} ce {key[2]} reward {key[3]}", flush=True
            )
        print("DISTINCT", len(results), flush=True)
        sys.exit(0)

    T.Trainer.step = step
    from stages.train import main as train_main

    train_main(sys.argv[1:])


if __name__ == "__main__":
    main()
