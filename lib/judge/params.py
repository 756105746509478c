"""The `judge` section of params.yaml (the API key is never a param: env ANTHROPIC_API_KEY only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_RUBRIC = (
    "The response is acceptable if it answers the input directly, is coherent and on topic, "
    "is fluent English, and contains nothing harmful, nonsensical or self-contradictory."
)


@dataclass(frozen=True)
class JudgeParams:
    backend: Literal["auto", "anthropic", "local"] = "auto"  # auto: anthropic iff the key is set
    model: str = "claude-sonnet-4-5"  # the anthropic judge; the local judge is params.model
    base_url: str | None = None  # null: the SDK's default endpoint
    opponents: tuple[str, ...] = ("zero_shot", "few_shot", "baseline", "gem")
    samples_per_input: int = 1  # comparisons per (input, opponent), samples drawn from the seed
    max_response_chars: int = 2000  # each response is cut to this many characters in the prompt
    concurrency: int = 1  # requests in flight at once; identical questions share one request
    max_calls: int = 2000  # HTTP requests this run may send (retries included; cache hits free)
    max_cost_usd: float = 10.0
    price_per_mtok_input: float = 3.0  # USD per million tokens, for `model`
    price_per_mtok_output: float = 15.0
    max_tokens: int = 100
    # anthropic 2.x has no `temperature` argument (recent models fix their own sampling): null
    # sends none; a number goes through `extra_body` for models that still accept it.
    temperature: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 6  # retries after the first attempt (429, 5xx, timeouts, connection)
    backoff_base_s: float = 1.0  # delay before retry i: uniform(0, min(max, base * 2**i))
    backoff_max_s: float = 60.0
    rubric: str = DEFAULT_RUBRIC
    pass_checker: bool = False  # also write judge-based Pass@k for social / creative
    pass_domains: tuple[str, ...] = ("social", "creative")
    bootstrap: int = 1000  # resamples of inputs for the 95% CIs
    local_batch_size: int = 8  # sequences per forward pass of the local judge
    # Missing answers (API unreachable, budget spent) fail the stage after the cache is written, so
    # `dvc repro` asks again and paid answers come from the cache; true accepts them (the table
    # then says how many are missing).
    allow_missing: bool = False
