"""What each system optimises, chosen once per run: `make_objective(system, loss, gem)`.

- baseline: token cross-entropy on the reference (one packed, padding-free forward, LoRA dropout
  as configured: `Trainer.reference_logits`);
- gem: GEM's loss on the same batch (losses.gem_loss);
- polychromic: CE + λ·(per-token score-function term of the set credit) + kl_coef·KL(π‖π_ref) on N
  samples per example (losses.policy_term, losses.kl_k2), all from one tree-packed pass
  (`Trainer.packed_pass`). With λ = 0 and kl_coef = 0 it trains on the baseline's CE forward, so it
  reproduces baseline bit for bit (its samples are still drawn, scored and logged).

An objective turns a micro-batch into named loss terms whose sum is the loss; the trainer
backpropagates them (and, on some steps, measures each one's gradient norm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lib.schemas import TRAINED_SYSTEMS
from lib.train import losses
from lib.train.examples import Example
from lib.train.params import GemParams, LossParams

if TYPE_CHECKING:
    from lib.train.trainer import Draw, Trainer


@dataclass(frozen=True)
class SetCredit:
    """Per-sample credit (B, N), set diversity D(Y) (B,), task reward (B, N) of one draw."""

    credit: torch.Tensor
    diversity: torch.Tensor
    reward: torch.Tensor
    reward_seconds: float  # wall time from submitting the reward to its result (overlapped)


@dataclass(frozen=True)
class Shares:
    """This rank's share (× world) of the global reference and sample tokens (1.0 with one rank)."""

    ref: float = 1.0
    sample: float = 1.0


@dataclass
class Terms:
    losses: dict[str, torch.Tensor]  # named scalar terms (weights applied); the loss is their sum
    logs: dict[str, float]  # values to log (ce, kl, ...)


class Objective:
    samples = False  # draws N samples per example each micro-batch

    def forward(self, tr: Trainer, batch: Sequence[Example], draw: Draw | None) -> Any:
        raise NotImplementedError

    def terms(self, out: Any, credit: SetCredit | None, shares: Shares) -> Terms:
        raise NotImplementedError


class CrossEntropy(Objective):
    def forward(self, tr: Trainer, batch: Sequence[Example], draw: Draw | None) -> torch.Tensor:
        return losses.target_ce(*tr.reference_logits(batch))

    def terms(self, out: torch.Tensor, credit: SetCredit | None, shares: Shares) -> Terms:
        ce = out * shares.ref
        return Terms({"ce": ce}, {"ce": float(ce.detach())})


class Gem(Objective):
    def __init__(self, gem: GemParams):
        self.gem = gem

    def forward(
        self, tr: Trainer, batch: Sequence[Example], draw: Draw | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, y = tr.reference_logits(batch)  # (K, V), (K,)
        with torch.no_grad():
            ce = losses.target_ce(z, y)
        return losses.target_gem(z, y, self.gem.beta, self.gem.h), ce

    def terms(self, out: Any, credit: SetCredit | None, shares: Shares) -> Terms:
        gem, ce = out
        return Terms({"gem": gem * shares.ref}, {"ce": float(ce) * shares.ref})


class SetObjective(Objective):
    """L = CE + λ·policy_term(credit, log π) + kl_coef·k2 (DESIGN.md §3; docs/training.md)."""

    samples = True

    def __init__(self, loss: LossParams):
        self.loss = loss
        self.packed = loss.lambda_ != 0 or loss.kl_coef != 0

    def forward(self, tr: Trainer, batch: Sequence[Example], draw: Draw | None) -> Any:
        assert draw is not None
        if not self.packed:  # nothing but CE reaches the gradient: the baseline's exact forward
            return CrossEntropy().forward(tr, batch, draw)
        return tr.packed_pass(batch, draw.token_ids, kl=self.loss.kl_coef != 0)

    def terms(self, out: Any, credit: SetCredit | None, shares: Shares) -> Terms:
        assert credit is not None
        if not self.packed:
            return CrossEntropy().terms(out, credit, shares)
        ce = out.ce * shares.ref
        terms = {"ce": ce}
        logs = {"ce": float(ce.detach())}
        if self.loss.lambda_ != 0:
            c = credit.credit.to(device=out.logp.device, dtype=out.logp.dtype)
            term = losses.policy_term(c, out.logp, out.n_tokens)
            terms["diversity"] = self.loss.lambda_ * term * shares.sample
        if out.kl is not None:
            terms["kl"] = self.loss.kl_coef * out.kl * shares.sample
            logs["kl"] = float(out.kl.detach()) * shares.sample
        return Terms(terms, logs)


def make_objective(system: str, loss: LossParams | None, gem: GemParams | None) -> Objective:
    if system == "baseline":
        return CrossEntropy()
    if system == "gem":
        if gem is None:
            raise ValueError("system 'gem' needs the gem params section")
        return Gem(gem)
    if system == "polychromic":
        if loss is None:
            raise ValueError("system 'polychromic' needs the loss params section")
        return SetObjective(loss)
    raise ValueError(f"unknown system '{system}'; known: {TRAINED_SYSTEMS}")
