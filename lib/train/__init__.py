"""LoRA training for the three trained systems: baseline (CE), gem (GEM loss), polychromic
(CE + λ·set-credit term + kl_coef·KL to the base model). See docs/training.md.

One loop, one data order, one LoRA setup; the systems differ only in their objective
(`objective.make_objective`). Modules: params (the params.yaml sections), examples (data, order,
sample seeds), losses (pure tensor functions), scorer (credit of a draw), objective (what each
system optimises), trainer (one step), packed_lm (its differentiable forward, as a module),
engine (that module wrapped by DDP/FSDP through accelerate), lora_ctx (LoRA switches for the
passes), checkpoint (resume), logging (DVCLive), run (a whole run).
"""

from lib.schemas import TRAINED_SYSTEMS as SYSTEMS
from lib.train import losses
from lib.train.checkpoint import params_hash
from lib.train.examples import DataOrder, DataReport, Example, build_examples, collate, sample_seed
from lib.train.lora_ctx import dropout_off
from lib.train.objective import make_objective
from lib.train.params import GemParams, LoraParams, LossParams, TrainParams
from lib.train.run import attach_lora, train
from lib.train.scorer import Scorer
from lib.train.trainer import Draw, Trainer

__all__ = [
    "SYSTEMS",
    "DataOrder",
    "DataReport",
    "Draw",
    "Example",
    "GemParams",
    "LoraParams",
    "LossParams",
    "Scorer",
    "TrainParams",
    "Trainer",
    "attach_lora",
    "build_examples",
    "collate",
    "dropout_off",
    "losses",
    "make_objective",
    "params_hash",
    "sample_seed",
    "train",
]
