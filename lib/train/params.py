"""The params.yaml sections the training stages read: `lora`, `train`, `loss`, `gem`.

No field has a default: params.yaml is the only place a default lives, and a missing key fails
(`lib.config.from_dict`), and each value is checked against the range next to its field. Checks
that one key alone cannot express live in `__post_init__`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lib.config import ParamsError, param


@dataclass(frozen=True)
class LoraParams:
    r: int = param(ge=1)
    alpha: int = param(ge=1)
    dropout: float = param(ge=0, lt=1)
    target_modules: tuple[str, ...] = param()


@dataclass(frozen=True)
class TrainParams:
    epochs: int = param(ge=1)  # used only when max_steps <= 0
    max_steps: int = param()  # optimizer steps; <= 0 means `epochs` passes over the data
    batch_size: int = param(ge=1)  # examples per micro-batch and process
    grad_accum: int = param(ge=1)  # micro-batches per optimizer step
    lr: float = param(gt=0)
    weight_decay: float = param(ge=0)
    warmup_steps: int = param(ge=0)
    max_length: int = param(ge=2)  # prompt + reference tokens; longer targets are cut
    max_grad_norm: float = param()  # <= 0 disables clipping
    checkpoint_every: int = param()  # optimizer steps; <= 0 disables checkpoints
    log_every: int = param(ge=1)  # optimizer steps between DVCLive rows
    val_every: int = (
        param()
    )  # optimizer steps between val evaluations (lib/train/validate.py); <= 0: never
    val_inputs: int = param(ge=1)  # distinct val inputs evaluated, in file order
    # The training seed (LoRA init, data order, dropout, samples); null: the top-level seed. Setting
    # it retrains with the data, the split and the generation seeds held fixed.
    seed: int | None = param(ge=0)


@dataclass(frozen=True)
class LossParams:
    lambda_: float = param(ge=0)  # params.yaml: `lambda`
    objective: Literal["additive", "multiplicative", "passk"] = (
        param()
    )  # lib.train.credit.OBJECTIVES
    reward: Literal["auto", "code_tests", "qa_match", "human_similarity"] = (
        param()
    )  # lib.train.rewards
    diversity: Literal["semantic", "lexical", "functional"] = param()  # functional: code_tests only
    num_samples: int = param(ge=2)
    passk_k: int = param(ge=1)  # k of the passk objective, 1 <= k < num_samples
    passk_threshold: float | None = (
        param()
    )  # passk: reward >= this counts as a pass (null: E[max of k])
    reward_test_timeout_s: float = param(gt=0)  # code_tests: CPU seconds per probe or test call
    reward_qa_f1_threshold: float = param()  # qa_match: token F1 at which an answer matches
    kl_coef: float = param(ge=0)  # weight of the k2 KL estimate to the base model on the samples
    # How the reference log-probs are computed (same values either way): fused = the packed pass
    # runs twice as many rows, the second copy with every LoRA update zeroed (one launch-bound pass
    # instead of two; the backward also runs through the copy, so it costs FLOPs); separate = a
    # second, no-grad pass with the adapters off (fewer FLOPs). auto: fused on CUDA, else separate;
    # separate under model.gradient_checkpointing, whose recompute cannot see the fused copy's scale.
    kl_pass: Literal["auto", "fused", "separate"] = param()
    max_new_tokens: int = param(ge=1)
    temperature: float = param()  # must be 1: log π scores the untempered distribution
    top_p: float = param()  # must be 1: log π scores the untruncated distribution
    # auto: on CUDA, decode the samples with a static KV cache and a CUDA-graphed step
    # (lib.sampling.StaticDecoder); eager: always the dynamic-cache sampler (the only path on CPU).
    decode: Literal["auto", "graph", "compile", "eager"] = param()
    grad_norm_every: int = param()  # optimizer steps between per-term gradient norms; <= 0: never
    val_samples: int = param(ge=0)  # samples per val input for the val reward curve; 0: none

    def __post_init__(self) -> None:
        if self.temperature != 1.0 or self.top_p != 1.0:
            raise ParamsError(
                f"loss.temperature = {self.temperature}, loss.top_p = {self.top_p}: training "
                "samples must be drawn at temperature 1 and top_p 1, the distribution log π "
                "scores; anything else makes the score-function estimator off-policy (biased)"
            )
        if self.objective == "passk" and not 1 <= self.passk_k < self.num_samples:
            raise ParamsError(
                f"loss.passk_k = {self.passk_k}: the passk objective needs 1 <= k < "
                f"loss.num_samples = {self.num_samples}"
            )


@dataclass(frozen=True)
class GemParams:
    beta: float = param(gt=0, le=1)
    h: Literal["linear", "logsigmoid"] = param()
