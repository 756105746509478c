"""Batched ancestral sampling with one RNG per row, so any sample can be reproduced alone.

`transformers.generate` draws every row from the global RNG: a sample then depends on what else
was in its batch and on everything sampled before it. Here each row owns a `torch.Generator`
seeded from its own `seed`, the prompt batch is left-padded with a correct attention mask and
position ids, and decoding reuses the KV cache. Training (polychromic's N samples per example)
and the `generate` stage share this loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # generated tokens, EOS included when it was produced
    finish_reason: str  # "eos" | "length"
    seed: int


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
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each token
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    out = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return out / out.sum(-1, keepdim=True)


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
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling params: temperature={temperature}, top_p={top_p}")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_token_id, device)  # (B, P)
    batch = ids.shape[0]
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    eos = torch.tensor(sorted(set(eos_token_ids)), device=device)
    out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)

    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P): left padding must not shift positions
    cache_kw = cache_kwarg(model)
    cache = None
    step_ids, step_pos, attn = ids, positions, mask
    for t in range(max_new_tokens):
        res = model(
            input_ids=step_ids,
            attention_mask=attn,
            position_ids=step_pos,
            use_cache=True,
            **{cache_kw: cache},
        )
        cache = getattr(res, cache_kw)
        logits = res.logits[:, -1, :].float()  # (B, V)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = _filter_top_p(torch.softmax(logits / temperature, dim=-1), top_p).cpu()
            # One draw per row from that row's own generator: independent of the batch.
            nxt = torch.stack(
                [torch.multinomial(probs[i], 1, generator=gens[i])[0] for i in range(batch)]
            ).to(device)
        nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
        out[:, t] = nxt
        hit = torch.isin(nxt, eos) & ~done
        lengths = torch.where(hit, torch.full_like(lengths, t + 1), lengths)
        done |= hit
        if bool(done.all()):
            break
        step_ids = nxt[:, None]
        step_pos = step_pos[:, -1:] + 1
        attn = torch.cat([attn, torch.ones((batch, 1), dtype=attn.dtype, device=device)], dim=1)

    result = []
    for i in range(batch):
        n = int(lengths[i])
        toks = out[i, :n].tolist()
        reason = "eos" if bool(done[i]) else "length"
        result.append(Completion(token_ids=toks, finish_reason=reason, seed=int(seeds[i])))
    return result


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
