"""The Claude judge through the `anthropic` SDK, with our own retry loop, disk cache and budget.

The SDK's own retries are off (`max_retries=0`) so that backoff, `retry-after` handling and the
budget (every HTTP attempt counts) are ours and testable with an injected `sleep`. The API key is
read from the environment at construction, handed to the SDK and never stored, logged or written:
errors we raise name the status code and the error type, never headers.

One request per cache key: a question whose answer is already being fetched (by another thread of
`ask`, or a caller's own thread) waits for that answer instead of paying for it again.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lib.judge.cache import AnswerCache, cache_key
from lib.judge.params import JudgeParams
from lib.judge.prompts import MISSING, UNPARSEABLE, Answer, Question, parse_answer

KEY_ENV = "ANTHROPIC_API_KEY"
# Status codes worth retrying: rate limit, request timeout, conflict, server errors, overloaded.
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class JudgeError(RuntimeError):
    """A judge failure that retrying cannot fix (bad request, authentication, no key)."""


class JudgeIncomplete(JudgeError):
    """Answers are missing because the run stopped early (API unreachable, budget spent)."""


class BudgetExhausted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Usage:
    calls: int = 0  # HTTP attempts sent
    answers: int = 0  # answers received and cached
    cache_hits: int = 0
    in_flight_waits: int = 0  # answers shared with an identical question already being asked
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    stopped: str | None = (
        None  # why the run stopped early: max_calls | max_cost_usd | api_unavailable
    )
    errors: dict[str, int] = field(default_factory=dict)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(
    retry: int, base: float, cap: float, rng: random.Random, retry_after: float | None
) -> float:
    """Full-jitter exponential backoff; a server's `retry-after` is a floor, never shortened."""
    delay = rng.uniform(0.0, min(cap, base * (2**retry)))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


class AnthropicJudge:
    name = "anthropic"

    def __init__(
        self,
        params: JudgeParams,
        cache_dir: str | Path | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        client: Any | None = None,
    ) -> None:
        self.params = params
        self.model = params.model
        self.cache = AnswerCache(cache_dir)
        self.sleep = sleep
        self.rng = rng or random.Random(0)
        self.usage = Usage()
        self._client = client
        self._lock = threading.Lock()  # guards usage, the budget and _in_flight
        self._in_flight: dict[str, Future] = {}

    def _get_client(self) -> Any:
        with self._lock:
            return self._make_client()

    def _make_client(self) -> Any:
        if self._client is None:
            key = os.environ.get(KEY_ENV)
            if not key:
                raise JudgeError(f"judge.backend is 'anthropic' but {KEY_ENV} is not set")
            import anthropic

            kwargs: dict[str, Any] = {
                "api_key": key,
                "max_retries": 0,
                "timeout": self.params.timeout_s,
            }
            if self.params.base_url:
                kwargs["base_url"] = self.params.base_url
            self._client = anthropic.Anthropic(**kwargs)
        return self._client

    def _payload(self, q: Question, attempt: int) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model,
            "system": q.system,
            "user": q.user,
            "max_tokens": self.params.max_tokens,
            "temperature": self.params.temperature,
            "attempt": attempt,  # the re-ask after a malformed answer is a different answer
        }

    def _projected_cost(self, q: Question) -> float:
        # ~4 characters a token; the worst case is a full `max_tokens` answer.
        in_tok = (len(q.system) + len(q.user)) / 4.0
        return (
            in_tok * self.params.price_per_mtok_input
            + self.params.max_tokens * self.params.price_per_mtok_output
        ) / 1e6

    def _check_budget(self, q: Question) -> None:
        if self.usage.calls >= self.params.max_calls:
            raise BudgetExhausted("max_calls")
        if self.usage.cost_usd + self._projected_cost(q) > self.params.max_cost_usd:
            raise BudgetExhausted("max_cost_usd")

    def _count_error(self, kind: str) -> None:
        self.usage.errors[kind] = self.usage.errors.get(kind, 0) + 1

    def _call(self, q: Question) -> dict[str, Any]:
        """One answer from the API, retrying transient failures; raises BudgetExhausted,
        ApiUnavailable (retries spent) or JudgeError (not retryable)."""
        import anthropic

        client = self._get_client()
        last = "unknown"
        for retry in range(self.params.max_retries + 1):
            with self._lock:
                self._check_budget(q)
                self.usage.calls += 1
            retry_after = None
            try:
                extra = (
                    {"extra_body": {"temperature": self.params.temperature}}
                    if self.params.temperature is not None
                    else {}
                )
                msg = client.messages.create(
                    model=self.model,
                    max_tokens=self.params.max_tokens,
                    system=q.system,
                    messages=[{"role": "user", "content": q.user}],
                    **extra,
                )
                text = _message_text(msg)
                if text is None:
                    last = "malformed_body"
                else:
                    return self._record(msg, text)
            except anthropic.APIStatusError as e:
                if e.status_code not in RETRY_STATUS:
                    raise JudgeError(
                        f"Anthropic API refused the request: HTTP {e.status_code} "
                        f"({getattr(e, 'type', None) or type(e).__name__})"
                    ) from None
                last = f"http_{e.status_code}"
                retry_after = parse_retry_after(e.response.headers)
            except anthropic.APITimeoutError:
                last = "timeout"
            except anthropic.APIConnectionError:
                last = "connection"
            except ValueError:  # a 200 whose body is not JSON
                last = "malformed_body"
            with self._lock:
                self._count_error(last)
            if retry == self.params.max_retries:
                break
            with self._lock:
                self.usage.retries += 1
            self.sleep(
                backoff_delay(
                    retry,
                    self.params.backoff_base_s,
                    self.params.backoff_max_s,
                    self.rng,
                    retry_after,
                )
            )
        raise ApiUnavailable(f"retries exhausted (last error: {last})")

    def _record(self, msg: Any, text: str) -> dict[str, Any]:
        usage = getattr(msg, "usage", None)
        in_tok = int(getattr(usage, "input_tokens", 0) or 0)
        out_tok = int(getattr(usage, "output_tokens", 0) or 0)
        with self._lock:
            self.usage.answers += 1
            self.usage.input_tokens += in_tok
            self.usage.output_tokens += out_tok
            self.usage.cost_usd += (
                in_tok * self.params.price_per_mtok_input
                + out_tok * self.params.price_per_mtok_output
            ) / 1e6
        return {
            "text": text,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "model": getattr(msg, "model", None),
            "stop_reason": getattr(msg, "stop_reason", None),
        }

    def _cached(self, key: str) -> dict[str, Any] | None:
        hit = self.cache.get(key)
        if hit is not None:
            with self._lock:
                self.usage.cache_hits += 1
        return hit

    def _answer(self, q: Question, attempt: int) -> dict[str, Any] | None:
        """The cached or fresh answer, or None once the run has stopped (budget, API down)."""
        key = cache_key(self._payload(q, attempt))
        if (hit := self._cached(key)) is not None:
            return hit
        with self._lock:
            pending = self._in_flight.get(key)
            if pending is None:
                mine: Future = Future()
                self._in_flight[key] = mine
        if pending is not None:  # the same question is being asked right now: share its answer
            got = pending.result()
            with self._lock:
                self.usage.in_flight_waits += 1
            return got
        try:
            # The owner of the previous request for this key may have finished (cached, then left
            # _in_flight) between our cache miss and our registration: look once more.
            got = self._cached(key)
            if got is None:
                got = self._fetch(q, key)
            mine.set_result(got)
        except BaseException as e:
            mine.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._in_flight[key]
        return got

    def _fetch(self, q: Question, key: str) -> dict[str, Any] | None:
        if self.usage.stopped is not None:
            return None  # stopped: only answers already paid for are used
        try:
            got = self._call(q)
        except (BudgetExhausted, ApiUnavailable) as e:
            with self._lock:
                if self.usage.stopped is None:
                    self.usage.stopped = (
                        e.reason if isinstance(e, BudgetExhausted) else "api_unavailable"
                    )
            return None
        self.cache.put(key, got)
        return got

    def _ask_one(self, q: Question) -> Answer:
        answer = Answer(MISSING, None)
        for attempt in (0, 1):  # a malformed answer is asked once more, then unparseable
            got = self._answer(q, attempt)
            if got is None:
                # Stopped before re-asking: the question stays open (missing), not judged.
                return Answer(MISSING, None)
            answer = parse_answer(got["text"], q.choices)
            if answer.verdict != UNPARSEABLE:
                break
        return answer

    def ask(self, questions: list[Question], desc: str = "judge") -> list[Answer]:
        """Answers in the order of `questions`; `judge.concurrency` requests at a time."""
        bar = tqdm(total=len(questions), desc=f"{desc} (anthropic {self.model})", leave=False)
        if self.params.concurrency <= 1:
            out = []
            for q in questions:
                out.append(self._ask_one(q))
                bar.update(1)
        else:
            with ThreadPoolExecutor(self.params.concurrency) as pool:
                futures = [pool.submit(self._ask_one, q) for q in questions]
                for f in futures:
                    f.add_done_callback(lambda _: bar.update(1))
                out = [f.result() for f in futures]
        bar.close()
        return out

    def describe(self) -> dict[str, Any]:
        u = self.usage
        return {
            "backend": self.name,
            "judge_model": self.model,
            "calls": u.calls,
            "answers": u.answers,
            "cache_hits": u.cache_hits,
            "in_flight_waits": u.in_flight_waits,
            "retries": u.retries,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cost_usd_estimate": round(u.cost_usd, 6),
            "stopped": u.stopped,
            "errors": dict(sorted(u.errors.items())),
            "max_calls": self.params.max_calls,
            "max_cost_usd": self.params.max_cost_usd,
        }


def _message_text(msg: Any) -> str | None:
    content = getattr(msg, "content", None)
    if not isinstance(content, list):
        return None
    texts = [getattr(b, "text", None) for b in content if getattr(b, "type", None) == "text"]
    texts = [t for t in texts if isinstance(t, str)]
    return "\n".join(texts) if texts else None
