"""Scoring a draw: per-sample credit (B, N) and set diversity (B,) for N samples per example.

`Scorer.submit(batch, draw)` starts the work and returns a `Pending`; the trainer runs the packed
forward before asking for `.result()`, so work submitted to the background (the task reward,
e.g. code executed in the sandbox) overlaps the forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from lib.train import losses
from lib.train.examples import Example
from lib.train.objective import SetCredit
from lib.train.params import LossParams

if TYPE_CHECKING:
    from lib.train.trainer import Draw


class Pending:
    """A scoring in flight: `result()` blocks until it is done; `seconds_waited` says how long."""

    def __init__(self, finish: Callable[[], SetCredit]):
        self._finish = finish
        self.seconds_waited = 0.0

    def result(self) -> SetCredit:
        t = time.perf_counter()
        out = self._finish()
        self.seconds_waited = time.perf_counter() - t
        return out


class Scorer:
    def __init__(self, loss: LossParams, device: torch.device):
        self.loss, self.device = loss, device

    def submit(self, batch: Sequence[Example], draw: Draw) -> Pending:
        texts, refs = draw.texts, [e.reference for e in batch]
        return Pending(lambda: self(texts, refs))

    def __call__(self, texts: list[list[str]], references: list[str]) -> SetCredit:
        b, n = len(texts), len(texts[0])
        emb = None
        if self.loss.diversity == "semantic" or self.loss.objective == "multiplicative":
            from lib.embed import embed_tensor

            flat = [t for g in texts for t in g]
            extra = references if self.loss.objective == "multiplicative" else []
            emb = embed_tensor(flat + extra, device=self.device).to(self.device)
        if self.loss.diversity == "semantic":
            dist = losses.semantic_distances(emb[: b * n].view(b, n, -1))
        elif self.loss.diversity == "lexical":
            dist = losses.lexical_distances(texts).to(self.device)
        else:
            raise ValueError(f"loss.diversity: unknown '{self.loss.diversity}'")
        if self.loss.objective == "additive":
            credit = losses.loo_credit(dist)
        elif self.loss.objective == "multiplicative":
            quality = losses.quality_scores(emb[: b * n].view(b, n, -1), emb[b * n :])
            credit = losses.marginal_credit(quality, dist)
        else:
            raise ValueError(f"loss.objective: unknown '{self.loss.objective}'")
        return SetCredit(credit.float(), losses.set_diversity(dist).float())
