"""One real `Trainer.step` per scenario through the stages' engine (`Engine.launch`), for
tests/test_distributed.py: `torchrun --nproc_per_node 2 -m tests.ddp_worker OUT BATCH` (or plain
`python -m ...` for the one-process reference). Each rank saves, per scenario, the LoRA gradients
the optimizer is handed, to OUT/rank<r>.pt.

Scenarios whose name starts with `planted_` break the gradient sync on purpose: `nosync` runs
every micro-batch under the wrapper's `no_sync` (with no other all-reduce left, ranks must then
disagree), `nomean` skips the explicit mean of a per-term norm step.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from lib.config import params_for
from lib.models import load_model
from lib.train import Trainer, attach_lora, build_examples
from lib.train.engine import Engine
from tests.test_train import _df

SCENARIOS = {
    # name: (system, grad_accum, grad_norm_every, plant)
    "baseline": ("baseline", 1, 0, None),
    "baseline_accum": ("baseline", 2, 0, None),
    "gem": ("gem", 1, 0, None),
    "polychromic": ("polychromic", 1, 0, None),
    "polychromic_norms": ("polychromic", 1, 1, None),
    "polychromic_norms_accum": ("polychromic", 2, 1, None),
    "planted_nosync": ("baseline", 1, 0, "nosync"),
    "planted_nomean": ("polychromic", 1, 1, "nomean"),
}


def _no_sync_always(engine: Engine):
    def sync(enabled: bool):
        if engine.dist.world == 1:
            return contextlib.nullcontext()
        return engine.accelerator.no_sync(engine.module)

    return sync


def run(out: Path, batch: int, names: list[str]) -> None:
    engine = Engine.launch(cpu=True)
    mp = params_for("model", base="tiny-random", device="cpu")
    lora = params_for("lora", dropout=0.0)  # dropout masks are per rank: equality needs it off
    grads: dict[str, list[torch.Tensor]] = {}
    for name in names:
        system, accum, every, plant = SCENARIOS[name]
        base, tok = load_model(mp)
        examples, _ = build_examples(_df(16), tok, 48)
        torch.manual_seed(0)  # the same LoRA init on every rank and in the reference
        model = attach_lora(base, lora, mp)
        engine = Engine(engine.dist, engine.accelerator)  # a fresh wrap per scenario
        engine.wrap(model)
        if plant == "nosync":
            engine.sync = _no_sync_always(engine)  # type: ignore[method-assign]
        if plant == "nomean":
            engine.mean_grads = lambda params: None  # type: ignore[method-assign]
        tp = params_for(
            "train", max_steps=1, batch_size=batch, grad_accum=accum, max_length=48, warmup_steps=0
        )
        loss = params_for(
            "loss",
            lambda_=0.5,
            num_samples=2,
            diversity="semantic",
            max_new_tokens=3,
            grad_norm_every=every,
        )
        tr = Trainer(system, model, tok, examples, tp, 3, loss, params_for("gem"), engine=engine)
        real = tr.optimizer.step

        def step(*a, tr=tr, real=real, name=name, **k):
            grads[name] = [p.grad.detach().clone() for p in tr.params]
            return real(*a, **k)

        tr.optimizer.step = step
        tr.step()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(grads, out / f"rank{engine.dist.rank}.pt")
    engine.dist.barrier()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(
        Path(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3].split(",") if len(sys.argv) > 3 else [*SCENARIOS],
    )
