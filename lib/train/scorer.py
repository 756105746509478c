"""Scoring a draw: task reward, distances and per-sample credit for N samples per example.

`Scorer.submit(batch, draw)` hands the code reward to a worker thread at once (`RewardFn.submit`:
one sandbox child per sample) and returns a `Pending`; the trainer runs the packed forward before
asking for `.result()`, so the execution overlaps it. In-process rewards run at `.result()`.
`.result()` then computes the distances (`loss.diversity`), waits for the reward and combines
them into the credit of `loss.objective` (`lib.train.credit.objective_credit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from lib.config import ParamsError
from lib.train import credit as credits
from lib.train import losses
from lib.train.examples import Example
from lib.train.objective import SetCredit
from lib.train.params import LossParams
from lib.train.rewards import make_reward

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


def domain_of(examples: Sequence[Example]) -> str:
    domains = sorted({e.domain for e in examples})
    if len(domains) != 1:
        raise ValueError(f"train examples mix domains {domains}: loss.reward=auto needs one")
    return domains[0]


class Scorer:
    def __init__(self, loss: LossParams, device: torch.device, domain: str):
        self.loss, self.device = loss, device
        self.reward = make_reward(
            loss.reward,
            domain=domain,
            qa_f1_threshold=loss.reward_qa_f1_threshold,
            test_timeout_s=loss.reward_test_timeout_s,
            device=str(device),
        )
        if self.reward.name == "human_similarity" or loss.diversity == "semantic":
            # Build the encoder now: its first load initialises modules from the global torch RNG,
            # and on the reward's worker thread that would race the training step's dropout draws.
            from lib.embed import embed_tensor

            cuda = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                embed_tensor(["warm-up"], device=device)
        if loss.diversity == "functional" and self.reward.name != "code_tests":
            raise ParamsError(
                f"loss.diversity = functional needs the code_tests reward (its executions give the "
                f"behaviour classes), not {self.reward.name!r}"
            )

    def submit(self, batch: Sequence[Example], draw: Draw) -> Pending:
        texts = draw.texts
        t0 = time.perf_counter()
        done: dict[str, float] = {}
        # code_tests builds each program as the evaluation does (prompt + extracted body, meta).
        args = ([e.meta for e in batch], [list(e.references) for e in batch], texts)
        future = None
        if self.reward.name == "code_tests":  # sandbox children: runs during the forward
            future = self.reward.submit(*args)
            future.add_done_callback(lambda _: done.setdefault("t", time.perf_counter()))
        # In-process rewards (the encoder of human_similarity) run on this thread at `result()`:
        # on a worker thread they would share the CPU thread pool with the forward, whose float
        # reductions then split differently and the same params stop giving the same bytes.

        def finish() -> SetCredit:
            dist = None
            if self.loss.diversity != "functional":
                dist = self.distances(texts)  # on this thread, while the reward may still run
            if future is not None:
                scored = future.result()
            else:
                t = time.perf_counter()
                scored = self.reward.score(*args)
                done["t"] = t0 + (time.perf_counter() - t)
            rewards = scored.rewards.to(self.device)
            if self.loss.diversity == "functional":
                assert scored.behaviours is not None
                classes = [credits.functional_classes(g) for g in scored.behaviours]
                dist = credits.functional_distances(classes).to(self.device)
            credit = credits.objective_credit(
                self.loss.objective,
                rewards,
                dist,
                k=self.loss.passk_k,
                threshold=self.loss.passk_threshold,
            )
            return SetCredit(
                credit=credit.float(),
                diversity=credits.set_diversity(dist).float(),
                reward=rewards.float(),
                reward_seconds=done.get("t", time.perf_counter()) - t0,
            )

        return Pending(finish)

    def distances(self, texts: list[list[str]]) -> torch.Tensor:
        """δ (B, N, N) of `loss.diversity` semantic (1 − cos MiniLM) or lexical (bigram Jaccard)."""
        if self.loss.diversity == "lexical":
            return losses.lexical_distances(texts).to(self.device)
        from lib.embed import embed_tensor

        b, n = len(texts), len(texts[0])
        emb = embed_tensor([t for g in texts for t in g], device=self.device).to(self.device)
        return losses.semantic_distances(emb.view(b, n, -1))
