"""The params.yaml sections the training stages read: `lora`, `train`, `loss`, `gem`.

No field has a default: params.yaml is the only place a default lives, and a missing key fails
(`lib.config.from_dict`). Checks that one key alone cannot express live in `__post_init__`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lib.config import ParamsError


@dataclass(frozen=True)
class LoraParams:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class TrainParams:
    epochs: int  # used only when max_steps <= 0
    max_steps: int  # optimizer steps; <= 0 means `epochs` passes over the data
    batch_size: int  # examples per micro-batch and process
    grad_accum: int  # micro-batches per optimizer step
    lr: float
    weight_decay: float
    warmup_steps: int
    max_length: int  # prompt + reference tokens; longer targets are cut
    max_grad_norm: float  # <= 0 disables clipping
    checkpoint_every: int  # optimizer steps; <= 0 disables checkpoints
    log_every: int  # optimizer steps between DVCLive rows


@dataclass(frozen=True)
class LossParams:
    lambda_: float  # params.yaml: `lambda`
    objective: Literal["additive", "multiplicative", "passk"]  # lib.train.credit.OBJECTIVES
    reward: Literal["auto", "code_tests", "qa_match", "human_similarity"]  # lib.train.rewards
    diversity: Literal["semantic", "lexical", "functional"]  # functional: code_tests only
    num_samples: int
    passk_k: int  # k of the passk objective, 1 <= k < num_samples
    passk_threshold: float | None  # passk: reward >= this counts as a pass (null: E[max of k])
    reward_test_timeout_s: float  # code_tests: seconds per test
    reward_qa_f1_threshold: float  # qa_match: token F1 at which an answer matches
    kl_coef: float  # weight of the k2 KL estimate to the base model on the samples
    max_new_tokens: int
    temperature: float  # must be 1: log π scores the untempered distribution
    top_p: float  # must be 1: log π scores the untruncated distribution
    # auto: on CUDA, decode the samples with a static KV cache and a CUDA-graphed step
    # (lib.sampling.StaticDecoder); eager: always the dynamic-cache sampler (the only path on CPU).
    decode: Literal["auto", "graph", "compile", "eager"]
    grad_norm_every: int  # optimizer steps between per-term gradient norms; <= 0: never

    def __post_init__(self) -> None:
        if self.temperature != 1.0 or self.top_p != 1.0:
            raise ParamsError(
                f"loss.temperature = {self.temperature}, loss.top_p = {self.top_p}: training "
                "samples must be drawn at temperature 1 and top_p 1, the distribution log π "
                "scores; anything else makes the score-function estimator off-policy (biased)"
            )
        if self.num_samples < 2:
            raise ParamsError(
                f"loss.num_samples = {self.num_samples}: diversity needs at least a pair (>= 2)"
            )
        if self.objective == "passk" and not 1 <= self.passk_k < self.num_samples:
            raise ParamsError(
                f"loss.passk_k = {self.passk_k}: the passk objective needs 1 <= k < "
                f"loss.num_samples = {self.num_samples}"
            )
        if self.kl_coef < 0:
            raise ParamsError(f"loss.kl_coef = {self.kl_coef}: must be >= 0")
        if self.max_new_tokens < 1:
            raise ParamsError(f"loss.max_new_tokens = {self.max_new_tokens}: must be >= 1")


@dataclass(frozen=True)
class GemParams:
    beta: float
    h: Literal["linear", "logsigmoid"]
