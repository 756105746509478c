"""Val curves: how a run's CE and task reward on held-out inputs move with its steps.

Training length is chosen from these curves (RESULTS.md: the step after which neither val CE nor
val reward improves by more than 1 % over 100 steps), so they measure the run as it stands without
changing it: every RNG stream the training step reads is left where it was, and no gradient is
recorded, so a run with val evaluations trains the same adapter bytes as one without (tested).

- val/ce: token cross-entropy over the reference tokens of the first `train.val_inputs` distinct
  val inputs, with every dropout off (the same packed pass as training's CE).
- val/reward (polychromic, `loss.val_samples` > 0): the mean task reward (`loss.reward`) of
  `val_samples` samples per input, drawn as training draws them (T 1, `loss.max_new_tokens`) with
  seeds from (seed, "val-sample", step, input, i).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from lib.seeds import rng_seed
from lib.train.examples import Example, build_examples
from lib.train.trainer import Trainer, dropout_off


@dataclass(frozen=True)
class ValSet:
    examples: list[Example]  # one per distinct input, in file order

    @classmethod
    def build(
        cls, df: pd.DataFrame, tokenizer: object, max_length: int, inputs: int, where: str
    ) -> ValSet:
        examples, _ = build_examples(df, tokenizer, max_length, where)
        seen: set[tuple[int, ...]] = set()
        first = []
        for e in examples:
            key = tuple(e.prompt_ids)
            if key not in seen:
                seen.add(key)
                first.append(e)
        return cls(first[:inputs])


def _batches(xs: Sequence[Example], size: int) -> list[Sequence[Example]]:
    return [xs[i : i + size] for i in range(0, len(xs), size)]


def evaluate(tr: Trainer, val: ValSet, samples: int) -> dict[str, float]:
    """{"val/ce": …, "val/reward": … (samples > 0)} of the model as it is after `tr.step_idx` steps."""
    cuda = [tr.device] if tr.device.type == "cuda" else []
    was_training = tr.model.training
    out: dict[str, float] = {}
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        nll, count = 0.0, 0
        with dropout_off(tr.model):
            for batch in _batches(val.examples, tr.train.batch_size):
                z, y = tr.reference_logits(batch)  # (K, V), (K,)
                z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
                nll += float(torch.nn.functional.cross_entropy(z, y, reduction="sum"))
                count += int(y.numel())
        out["val/ce"] = nll / count
        if samples > 0 and tr.scorer is not None:
            rewards = []
            # Draws of exactly the training decoder's rows (the last batch filled with copies of
            # its first input, whose samples are dropped): any other size samples eagerly, which
            # at the 0.5B coder's 128 tokens made each val point ~1 min on an H200. The samples do
            # not depend on the batching: each has its own seed.
            rows = tr.draw_rows
            exact = rows is not None and rows % samples == 0
            size = rows // samples if exact else tr.train.batch_size
            for batch in _batches(val.examples, size):
                filled = [*batch, *[batch[0]] * (size - len(batch))] if exact else batch
                draw = tr.draw(
                    filled,
                    samples,
                    lambda e, i: rng_seed(tr.seed, "val-sample", tr.step_idx, e.index, i),
                )
                metas = [e.meta for e in batch]
                refs = [list(e.references) for e in batch]
                texts = draw.texts[: len(batch)]
                rewards.append(tr.scorer.reward(metas, refs, texts).reshape(-1).double())
            out["val/reward"] = float(torch.cat(rewards).mean())
    tr.model.train(was_training)
    return out
