"""Batched ancestral sampling with one RNG per row, so any sample can be reproduced alone.

`transformers.generate` draws every row from the global RNG: a sample then depends on what else
was in its batch and on everything sampled before it. Here each row owns a `torch.Generator`
seeded from its own `seed`, the prompt batch is left-padded with a correct attention mask and
position ids, and decoding reuses the KV cache. Training (polychromic's N samples per example)
and the `generate` stage share this loop.

Speed (all exact: none of it changes which token a row draws for a given seed and prompt):
- Row i's generator draws its `max_new_tokens` uniforms u_i,t once, up front; step t then samples
  every row at once by inverse CDF (the first token whose cumulative probability exceeds u_i,t),
  on the model's device. No per-row Python loop, no (B, V) copy to the CPU per step.
- Identical prompts in a batch (N samples of one input) are prefilled once and their KV cache rows
  copied, instead of re-encoding the same prompt N times.
- Prefill computes logits for the last position only (`logits_to_keep=1`), not (B, P, V).
- Finished rows are dropped from the batch (and the cache) once they are a quarter of it.
- Top-p looks at the 256 most likely tokens first and sorts the whole vocabulary only for rows
  whose nucleus is not inside them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_TOPK_FIRST = 256  # candidates tried before a full-vocabulary sort for top-p
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


def _filter_top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    # probs: (B, V). Keep the smallest set whose mass reaches top_p (always at least the top token).
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each token
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    out = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return out / out.sum(-1, keepdim=True)


def _inverse_cdf(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index of the first entry of each row whose cumulative mass exceeds u·total.

    p: (B, K) non-negative, u: (B,) in [0, 1) → (B,) long. Never lands on a zero-mass entry.
    """
    # float64: a float32 running sum over ~1e5 entries drifts by more than a token's width.
    cdf = p.double().cumsum(-1)  # (B, K)
    x = (u.double() * cdf[:, -1]).unsqueeze(-1)  # (B, 1)
    k = torch.searchsorted(cdf, x, right=True).squeeze(-1)  # (B,)
    # Rounding can put x at the very top; fall back to the last entry with mass.
    last = (p > 0).long().cumsum(-1).argmax(-1)
    return torch.minimum(k, last)


def _nucleus_keep(vals: torch.Tensor, top_p: float) -> torch.Tensor:
    """vals (B, K) → vals with everything outside the top-p nucleus zeroed, same order.

    The nucleus is taken in a canonical order, probability descending and ties by position
    (a stable sort), so exactly tied probabilities at its edge never make it depend on the batch.
    """
    sorted_p, order = vals.sort(dim=-1, descending=True, stable=True)
    before = sorted_p.double().cumsum(-1) - sorted_p  # mass strictly before each token
    kept = sorted_p.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(vals).scatter(-1, order, kept)


_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit avalanche hash on int64 holding values < 2**32; both multipliers are < 2**31, so
    # no product overflows int64 (same bits on every device).
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x1B873593) & _M32
    return x ^ (x >> 16)


_ID_HASH: dict[tuple[int, str], torch.Tensor] = {}


def _id_hash(vocab: int, device: torch.device) -> torch.Tensor:
    """(V,) int64: the per-token half of the noise hash, computed once per vocabulary and device."""
    key = (vocab, str(device))
    if key not in _ID_HASH:
        ids = torch.arange(vocab, dtype=torch.long, device=device)
        _ID_HASH[key] = _mix32((ids + 0x9E3779B9) & _M32)
    return _ID_HASH[key]


def token_noise(u: torch.Tensor, id_hash: torch.Tensor) -> torch.Tensor:
    """Exponential(1) noise per (row, token): a hash of the row's step uniform and the token id.

    u: (B,) in [0, 1); id_hash: (B, K) or (1, K) `_id_hash` values of the candidate tokens →
    (B, K) float32 > 0. Keyed by token id, so a token gets the same noise whichever other tokens
    are candidates.
    """
    key = (u.double() * 2.0**32).long().clamp(max=_M32)  # (B,)
    h = _mix32(id_hash ^ key[:, None]) >> 8  # (B, K), 24 bits: exact in float32
    return -torch.log((h.float() + 0.5) * 2.0**-24)  # U in (0, 1) strictly, so E > 0


def _race(kept: torch.Tensor, id_hash: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # Exponential race: argmax p_j / E_j is a draw from p (zero-mass tokens never win). A token
    # entering or leaving the nucleus by float noise changes the result only if it would win.
    # Returns the winning column.
    return (kept.float() / token_noise(u, id_hash)).argmax(-1)


def draw(probs: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    """One token per row from `probs` (B, V) restricted to its top-p nucleus, driven by u (B,).

    A draw from `_filter_top_p(probs, top_p)`. top_p = 1: inverse CDF over the vocabulary in
    token-id order (near-equal probabilities swap ranks under float noise, batched vs alone; id
    order only nudges interval edges). top_p < 1: an exponential race whose per-token noise is a
    hash of (u, token id), because a nucleus edge that moves by one token would shift every
    inverse-CDF interval after it. Candidates are the 256 likeliest tokens when the nucleus lies
    inside them, else the whole vocabulary; both give the same token.
    """
    if top_p >= 1.0:
        return _inverse_cdf(probs, u)
    vocab = probs.shape[-1]
    k = min(_TOPK_FIRST, vocab)
    top_vals, top_idx = probs.topk(k, dim=-1)  # (B, k), descending
    # The nucleus fits in the top k when the tokens strictly above the k-th value already reach
    # top_p (then the k-th and anything tied with it are outside, whatever topk's tie order).
    above = top_vals.masked_fill(top_vals <= top_vals[:, -1:], 0.0)
    fits = above.double().sum(-1) >= top_p  # (B,)
    top_idx, order = top_idx.sort(dim=-1)  # token-id order: the nucleus's tie rule needs it
    table = _id_hash(vocab, probs.device)  # (V,)
    col = _race(_nucleus_keep(top_vals.gather(-1, order), top_p), table[top_idx], u)
    out = top_idx.gather(-1, col.unsqueeze(-1)).squeeze(-1)
    if k < vocab and not bool(fits.all()):
        rows = (~fits).nonzero().squeeze(-1)
        out[rows] = _race(_nucleus_keep(probs[rows], top_p), table[None, :], u[rows])
    return out


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
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if len(prompts) == 0:
        return []
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling params: temperature={temperature}, top_p={top_p}")
    device = next(model.parameters()).device
    batch = len(prompts)

    # Prefill each distinct prompt once; `expand` maps every row to its distinct prompt.
    keys = [tuple(int(t) for t in p) for p in prompts]
    first: dict[tuple[int, ...], int] = {}
    for key in keys:
        first.setdefault(key, len(first))
    uniq = list(first)
    expand = torch.tensor([first[k] for k in keys], dtype=torch.long, device=device)  # (B,)
    ids, mask = left_pad(uniq, pad_token_id, device)  # (U, P)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (U, P): left padding must not shift positions

    if temperature > 0:
        # Row i's whole random stream, drawn up front from its own generator: (B, T).
        uniforms = torch.stack(
            [
                torch.rand(
                    max_new_tokens,
                    generator=torch.Generator().manual_seed(int(s)),
                    dtype=torch.float64,
                )
                for s in seeds
            ]
        ).to(device)

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
    cache, logits = getattr(res, cache_kw), res.logits[:, -1, :]  # logits: (U, V), model dtype
    attn, step_pos = mask, positions[:, -1:]  # (U, P), (U, 1)
    if len(uniq) < batch:
        cache = _select_rows(cache, expand)
        logits, attn, step_pos = logits[expand], attn[expand], step_pos[expand]  # (B, ...)
    del res

    eos = torch.tensor(sorted(set(eos_token_ids)), device=device)
    out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    eos_hit = torch.zeros(batch, dtype=torch.bool, device=device)  # by original row
    alive = torch.arange(batch, device=device)  # original row of each running row
    done = torch.zeros(batch, dtype=torch.bool, device=device)  # by running row
    logprob = torch.zeros(batch, dtype=torch.float64, device=device)  # by original row
    for t in range(max_new_tokens):
        raw, logits = logits, logits.float()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = draw(probs, uniforms[alive, t], top_p)
        nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
        out[alive, t] = nxt
        logprob[alive] += torch.where(done, 0.0, _token_logprob(raw, nxt))
        hit = torch.isin(nxt, eos) & ~done
        lengths[alive[hit]] = t + 1
        eos_hit[alive[hit]] = True
        done |= hit
        n_done = int(done.sum())
        if n_done == len(alive) or t == max_new_tokens - 1:
            break
        if n_done >= _COMPACT_FRACTION * len(alive):
            keep = (~done).nonzero().squeeze(-1)
            cache = _select_rows(cache, keep)
            alive, nxt, attn, step_pos = alive[keep], nxt[keep], attn[keep], step_pos[keep]
            done = done[keep]
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
        logits = res.logits[:, -1, :]  # (B_alive, V)

    lengths_l, eos_l, out_l = lengths.tolist(), eos_hit.tolist(), out.tolist()
    lp_l = logprob.tolist()
    return [
        Completion(
            token_ids=out_l[i][: lengths_l[i]],
            finish_reason="eos" if eos_l[i] else "length",
            seed=int(seeds[i]),
            logprob=lp_l[i],
        )
        for i in range(batch)
    ]


class StaticDecoder:
    """Fixed-shape sampling for `rows` prompts of at most `width` tokens and `max_new_tokens`.

    A transformers `StaticCache` allocated once and one decode-step function over fixed buffers;
    with `compile=True` that step goes through `torch.compile(mode="reduce-overhead")`, i.e. it
    replays as one CUDA graph instead of launching ~2k kernels a token (36 layers × LoRA
    projections): 4.9× faster decoding at Qwen3-8B shapes on an H100 (bench/decode_graphs.py),
    after a one-off compile of ~2 minutes. Shapes never change between calls, so it compiles once
    per run: prompts are left-padded to `width` and finished rows keep decoding padding (no
    compaction). Row i still draws only from its own seed's uniforms, as in `sample`; compiled
    kernels round differently from eager ones, so a near-tie can resolve to another token than
    `sample` would pick (training samples only; the generate stage stays on `sample`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        rows: int,
        width: int,
        max_new_tokens: int,
        *,
        compile: bool = True,
    ):
        from transformers import StaticCache

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model, self.rows, self.width, self.new = model, rows, width, max_new_tokens
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=base.config, max_cache_len=width + max_new_tokens)
        long = {"dtype": torch.long, "device": self.device}
        self.ids = torch.zeros((rows, 1), **long)  # the step's input token
        self.pos = torch.zeros((rows, 1), **long)  # its position id (left padding aware)
        self.cache_pos = torch.zeros((1,), **long)  # its slot in the cache (the same for all rows)
        self.mask = torch.zeros((rows, width + max_new_tokens), **long)
        self.kw = cache_kwarg(model)
        self.step = (
            torch.compile(self._step, mode="reduce-overhead", dynamic=False)
            if compile
            else self._step
        )

    def _step(self) -> torch.Tensor:
        return self.model(
            input_ids=self.ids,
            position_ids=self.pos,
            cache_position=self.cache_pos,
            attention_mask=self.mask,
            use_cache=True,
            **{self.kw: self.cache},
        ).logits[:, -1, :]

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        seeds: Sequence[int],
        *,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> list[Completion]:
        """Like `sample`, for exactly `rows` prompts of at most `width` tokens."""
        if len(prompts) != self.rows or len(seeds) != self.rows:
            raise ValueError(f"StaticDecoder: built for {self.rows} rows, got {len(prompts)}")
        if max(len(p) for p in prompts) > self.width:
            raise ValueError(f"StaticDecoder: a prompt is longer than the width {self.width}")
        w, new, rows = self.width, self.new, self.rows
        ids, mask = left_pad([list(p) for p in prompts], pad_token_id, self.device)
        if ids.shape[1] < w:  # pad to the fixed width (left)
            extra = w - ids.shape[1]
            ids = torch.cat([torch.full((rows, extra), pad_token_id, **_like(ids)), ids], 1)
            mask = torch.cat([torch.zeros((rows, extra), **_like(mask)), mask], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if temperature > 0:
            uniforms = torch.stack(
                [
                    torch.rand(
                        new, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64
                    )
                    for s in seeds
                ]
            ).to(self.device)
        self.cache.reset()
        self.mask.zero_()
        self.mask[:, :w] = mask
        logits = (
            self.model(
                input_ids=ids,
                attention_mask=self.mask[:, :w],
                position_ids=positions,
                cache_position=torch.arange(w, device=self.device),
                use_cache=True,
                logits_to_keep=1,
                **{self.kw: self.cache},
            )
            .logits[:, -1, :]
            .float()
        )
        eos = torch.tensor(sorted(set(eos_token_ids)), device=self.device)
        out = torch.full((rows, new), pad_token_id, dtype=torch.long, device=self.device)
        lengths = torch.full((rows,), new, dtype=torch.long, device=self.device)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        eos_hit = torch.zeros(rows, dtype=torch.bool, device=self.device)
        step_pos = positions[:, -1:]
        logprob = torch.zeros(rows, dtype=torch.float64, device=self.device)
        for t in range(new):
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = draw(torch.softmax(logits / temperature, dim=-1), uniforms[:, t], top_p)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            out[:, t] = nxt
            logprob += torch.where(done, 0.0, _token_logprob(logits, nxt))
            hit = torch.isin(nxt, eos) & ~done
            lengths[hit] = t + 1
            eos_hit |= hit
            done |= hit
            if t == new - 1 or bool(done.all()):
                break
            step_pos = step_pos + 1
            self.ids.copy_(nxt[:, None])
            self.pos.copy_(step_pos)
            self.cache_pos.fill_(w + t)
            self.mask[:, w + t] = 1
            # A copy: a CUDA graph reuses its output buffer on the next replay.
            logits = self.step().to(torch.float32, copy=True)
        lengths_l, eos_l, out_l = lengths.tolist(), eos_hit.tolist(), out.tolist()
        lp_l = logprob.tolist()
        return [
            Completion(
                out_l[i][: lengths_l[i]], "eos" if eos_l[i] else "length", int(seeds[i]), lp_l[i]
            )
            for i in range(rows)
        ]


def _like(t: torch.Tensor) -> dict[str, object]:
    return {"dtype": t.dtype, "device": t.device}


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
