"""Batched ancestral sampling with one RNG per row, so any sample can be reproduced alone.

`transformers.generate` draws every row from the global RNG: a sample then depends on what else
was in its batch and on everything sampled before it. Here each row owns a `torch.Generator`
seeded from its own `seed`, the prompt batch is left-padded with a correct attention mask and
position ids, and decoding reuses the KV cache. Two decoders share the prefill (`_prefill`) and
the per-row draw and bookkeeping (`_Rows`): the eager `sample` here (dynamic cache; the CPU path)
and `lib.static_decoder.StaticDecoder` (static cache, a CUDA-graphed step), which training
(polychromic's N samples per example, `loss.decode`) and the `generate` stage
(`generate.decode`) both use on a GPU.

Speed (all exact: none of it changes which token a row draws for a given seed and prompt):
- Row i's generator draws its `max_new_tokens` uniforms u_i,t once, up front; step t then samples
  every row at once by inverse CDF (the first token whose cumulative probability exceeds u_i,t),
  on the model's device. No per-row Python loop, no (B, V) copy to the CPU per step.
- Identical prompts in a batch (N samples of one input) are prefilled once and their KV cache rows
  copied, instead of re-encoding the same prompt N times.
- Prefill computes logits for the last position only (`logits_to_keep=1`), not (B, P, V).
- `sample` drops finished rows from the batch (and the cache) once they are a quarter of it.
- The draw (`lib.draw.draw`) looks at the 256 most likely tokens first; rows whose top-p nucleus
  is not inside them find it over the whole vocabulary, on a GPU with no sort when they are many
  (`_nucleus_keep_threshold`, compiled: 31 masked sums bisect for the smallest kept probability;
  2.5 ms instead of the sort's 6.8 ms for 320 rows of Qwen3's 151,936 tokens on an H200).
  On CUDA, top-p draws go through `lib.draw.draw_rejection` instead (`_by_rejection`): `draw`'s
  token, found among the race's 4 best over the whole vocabulary by a nucleus membership test,
  compiled, with no host sync but a rare fallback to `draw` (and, compiled, up to the last bits
  of inductor's log). A CPU keeps `draw`: its samples are unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lib.draw import _filter_top_p, draw, draw_rejection, token_noise  # noqa: F401  (re-exported)

_COMPACT_FRACTION = 0.25  # drop finished rows once they are this share of the running batch


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # generated tokens, EOS included when it was produced
    finish_reason: str  # "eos" | "length"
    seed: int
    # Σ_t log p(token_t | prompt, tokens_<t) under the model's own distribution (T = 1, no top-p),
    # EOS included: the log π(y|x) that training scores, recorded while drawing.
    logprob: float


def _token_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per row in float64: (B, V), (B,) → (B,). Half precision is upcast
    to float32 first; float32 / float64 logits are used as they are."""
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return z.log_softmax(-1).gather(-1, tokens[:, None])[:, 0].double()


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, P) with P = longest prompt, padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: sampling needs at least one prompt token")
        ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _logits_kwarg(model: torch.nn.Module) -> str | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def _select_rows(cache: object, rows: torch.Tensor) -> object:
    """Cache restricted (or repeated) to batch `rows`, in that order."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)  # type: ignore[attr-defined]
        return cache
    # Legacy tuple-of-(key, value) caches of old transformers releases.
    return tuple(tuple(t.index_select(0, rows.to(t.device)) for t in layer) for layer in cache)  # type: ignore[union-attr]


def _layer_kv(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(keys, values)] per layer, each (B, kv_heads, P, head_dim), of a dynamic cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[attr-defined]
    return [(k, v) for k, v in cache]  # type: ignore[attr-defined]


def _check(prompts: Sequence, seeds: Sequence, temperature: float, top_p: float) -> None:
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling params: temperature={temperature}, top_p={top_p}")


@dataclass
class _Prefill:
    cache: object  # KV cache of the U distinct prompts
    logits: torch.Tensor  # (B, V) model dtype: every row's next-token logits
    mask: torch.Tensor  # (B, P) attention mask of every row's left-padded prompt
    last_pos: torch.Tensor  # (B, 1) position id of every row's last prompt token
    expand: torch.Tensor | None  # (B,) the distinct prompt of each row; None: all distinct


def distinct_prompts(
    prompts: Sequence[Sequence[int]],
) -> tuple[list[tuple[int, ...]], list[int]]:
    """(the distinct prompts in order of first appearance, each prompt's index among them): the N
    samples of an input share one prefill."""
    first: dict[tuple[int, ...], int] = {}
    keys = [tuple(int(t) for t in p) for p in prompts]
    for key in keys:
        first.setdefault(key, len(first))
    return list(first), [first[key] for key in keys]


def _prefill(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_token_id: int, device
) -> _Prefill:
    """Each distinct prompt runs once (the N samples of an input share it); logits of the last
    position only (`logits_to_keep=1`), not (B, P, V)."""
    uniq, expand_rows = distinct_prompts(prompts)
    ids, mask = left_pad(uniq, pad_token_id, device)  # (U, P)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (U, P): left padding must not shift positions
    cache_kw = cache_kwarg(model)
    logits_kw = _logits_kwarg(model)
    extra = {logits_kw: 1} if logits_kw else {}
    res = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_kw: None},
        **extra,
    )
    logits, last = res.logits[:, -1, :], positions[:, -1:]  # (U, V) model dtype, (U, 1)
    expand = None
    if len(uniq) < len(prompts):
        expand = torch.tensor(expand_rows, dtype=torch.long, device=device)
        logits, mask, last = logits[expand], mask[expand], last[expand]
    return _Prefill(getattr(res, cache_kw), logits, mask, last, expand)


def _by_rejection(device: torch.device, top_p: float) -> bool:
    """Whether `_Rows` draws top-p by rejection (`draw_rejection`: fused, no host sync but its
    rare fallback) instead of `draw`: on CUDA only, so CPU samples stay what they were."""
    return device.type == "cuda" and top_p < 1.0


class _Rows:
    """Decoding state both decoders share: every row's tokens, where it ended, and its draw.

    Row i's step-t token is `draw` under row i's own uniform u_i,t (the argmax when greedy); a row
    that ended produces padding until its batch drops it.
    """

    def __init__(self, seeds, new, eos_token_ids, pad, temperature, top_p, device) -> None:
        batch = len(seeds)
        self.seeds, self.pad, self.temperature, self.top_p = list(seeds), pad, temperature, top_p
        if temperature > 0:
            # Row i's whole random stream, drawn up front from its own generator: (B, T).
            self.uniforms = torch.stack(
                [
                    torch.rand(
                        new, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64
                    )
                    for s in seeds
                ]
            ).to(device)
        self.eos = torch.tensor(sorted(set(eos_token_ids)), device=device)
        self.out = torch.full((batch, new), pad, dtype=torch.long, device=device)
        self.lengths = torch.full((batch,), new, dtype=torch.long, device=device)
        self.eos_hit = torch.zeros(batch, dtype=torch.bool, device=device)  # by original row
        self.alive = torch.arange(batch, device=device)  # original row of each running row
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)  # by running row
        self.logprob = torch.zeros(batch, dtype=torch.float64, device=device)  # by original row

    def step(self, logits: torch.Tensor, t: int) -> torch.Tensor:
        """Step t's token of every running row from its logits (B_alive, V), model dtype ->
        (B_alive,); adds the token's log-prob to its row's `logprob`."""
        z = logits.float()  # the draw in float32 whatever the model dtype
        if self.temperature == 0:
            nxt = z.argmax(-1)
        else:
            probs = torch.softmax(z / self.temperature, dim=-1)
            drawer = draw_rejection if _by_rejection(probs.device, self.top_p) else draw
            nxt = drawer(probs, self.uniforms[self.alive, t], self.top_p)
        nxt = torch.where(self.done, torch.full_like(nxt, self.pad), nxt)
        self.out[self.alive, t] = nxt
        # From the model-dtype logits, as the loss scores them (half precision is upcast).
        self.logprob[self.alive] += torch.where(self.done, 0.0, _token_logprob(logits, nxt))
        hit = torch.isin(nxt, self.eos) & ~self.done
        # Written through `alive` with torch.where, not `x[alive[hit]] = ...`: a boolean index
        # waits on the host for its size; this does not (same values: `alive` has no repeats).
        self.lengths[self.alive] = torch.where(hit, t + 1, self.lengths[self.alive])
        self.eos_hit[self.alive] |= hit
        self.done |= hit
        return nxt

    def keep(self, keep: torch.Tensor) -> None:
        self.alive, self.done = self.alive[keep], self.done[keep]

    def completions(self) -> list[Completion]:
        lengths, eos, out = self.lengths.tolist(), self.eos_hit.tolist(), self.out.tolist()
        logprob = self.logprob.tolist()
        return [
            Completion(out[i][: lengths[i]], "eos" if eos[i] else "length", int(s), logprob[i])
            for i, s in enumerate(self.seeds)
        ]


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    *,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[Completion]:
    """Sample one completion per prompt row; row i draws only from `torch.Generator().manual_seed(seeds[i])`.

    temperature == 0 means greedy. Rows stop at the first EOS or after `max_new_tokens`.
    Row i's tokens depend only on (prompts[i], seeds[i]) and the model, never on the other rows
    (up to floating-point differences of batched matmuls).
    """
    _check(prompts, seeds, temperature, top_p)
    if len(prompts) == 0:
        return []
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    device = next(model.parameters()).device
    rows = _Rows(seeds, max_new_tokens, eos_token_ids, pad_token_id, temperature, top_p, device)
    pre = _prefill(model, prompts, pad_token_id, device)
    cache_kw = cache_kwarg(model)
    cache, logits, attn, step_pos = pre.cache, pre.logits, pre.mask, pre.last_pos
    if pre.expand is not None:
        cache = _select_rows(cache, pre.expand)
    del pre
    for t in range(max_new_tokens):
        nxt = rows.step(logits, t)
        n_done = int(rows.done.sum())
        if n_done == len(rows.alive) or t == max_new_tokens - 1:
            break
        if n_done >= _COMPACT_FRACTION * len(rows.alive):
            keep = (~rows.done).nonzero().squeeze(-1)
            cache = _select_rows(cache, keep)
            nxt, attn, step_pos = nxt[keep], attn[keep], step_pos[keep]
            rows.keep(keep)
        step_pos = step_pos + 1
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        res = model(
            input_ids=nxt[:, None],
            attention_mask=attn,
            position_ids=step_pos,
            use_cache=True,
            **{cache_kw: cache},
        )
        cache = getattr(res, cache_kw)
        logits = res.logits[:, -1, :]  # (B_alive, V), model dtype
    return rows.completions()


def __getattr__(name: str) -> Any:
    # `StaticDecoder` lives in lib/static_decoder.py (which imports this module); the old import
    # path `from lib.sampling import StaticDecoder` keeps working.
    if name == "StaticDecoder":
        from lib.static_decoder import StaticDecoder

        return StaticDecoder
    raise AttributeError(f"module 'lib.sampling' has no attribute '{name}'")


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5.2x renamed `past_key_values` to `cache`; older releases (the GPU image) lack it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def eos_ids(tokenizer: object, model: torch.nn.Module | None = None) -> list[int]:
    """Every token that ends a turn: the tokenizer's EOS plus the generation config's."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))  # type: ignore[attr-defined]
    cfg = getattr(model, "generation_config", None)
    extra = getattr(cfg, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(e) for e in extra)
    if not ids:
        raise ValueError("tokenizer has no EOS token: cannot tell where a sample ends")
    return sorted(ids)
