"""The `judge` section of params.yaml (the API key is never a param: env ANTHROPIC_API_KEY only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lib.config import ParamsError, param


@dataclass(frozen=True)
class JudgeParams:
    """`judge:` in params.yaml (what each key means is written there)."""

    backend: Literal["auto", "anthropic", "local"] = param()  # auto: anthropic iff the key is set
    model: str = param(
        pattern=r"\S+", doc="a model name"
    )  # the API judge; the local one is model.base
    base_url: str | None = param(pattern=r"https?://\S+", doc="null or an http(s):// URL")
    opponents: tuple[str, ...] = param()
    samples_per_input: int = param(ge=1)  # comparisons per (input, opponent)
    max_response_chars: int = param(ge=1)
    concurrency: int = param(ge=1)  # requests in flight at once; identical questions share one
    max_calls: int = param(ge=0)  # HTTP requests this run may send (retries included)
    max_cost_usd: float = param(ge=0)
    price_per_mtok_input: float = param(ge=0)
    price_per_mtok_output: float = param(ge=0)
    max_tokens: int = param(ge=1)
    # anthropic 2.x has no `temperature` argument (recent models fix their own sampling): null
    # sends none; a number goes through `extra_body` for models that still accept it.
    temperature: float | None = param(ge=0, le=1)
    timeout_s: float = param(gt=0)
    max_retries: int = param(ge=0)
    backoff_base_s: float = param(ge=0)
    backoff_max_s: float = param(ge=0)
    rubric: str = param(pattern=r"(?s).*\S.*", doc="a non-empty text")
    pass_checker: bool = param()
    pass_domains: tuple[str, ...] = param()
    bootstrap: int = param(ge=1)
    local_batch_size: int = param(ge=1)
    # Missing answers (API unreachable, budget spent) fail the stage after the cache is written, so
    # `dvc repro` asks again and paid answers come from the cache; true accepts them (the table
    # then says how many are missing).
    allow_missing: bool = param()

    def __post_init__(self) -> None:
        from lib.schemas import SYSTEMS

        bad = [o for o in self.opponents if o not in SYSTEMS or o == "polychromic"]
        if bad or not self.opponents:
            raise ParamsError(
                f"opponents = {list(self.opponents)}: accepted: a non-empty list of "
                f"{[s for s in SYSTEMS if s != 'polychromic']}"
            )
        if self.backoff_base_s > self.backoff_max_s:
            raise ParamsError(
                f"backoff_base_s = {self.backoff_base_s} > backoff_max_s = {self.backoff_max_s}: "
                "need base <= max"
            )
