"""`StaticDecoder`: the graphed decoder that training and the generate stage share on a GPU.

A fixed-shape counterpart of `lib.sampling.sample`: the same prefill (`_prefill`) and per-row draw
(`_Rows`), a static KV cache, and one decode step over fixed buffers that replays as a CUDA graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from lib.decode_kernels import fused_rms_norms, matmul_decode_attention
from lib.prefill import PackedPrefill, packed_prefill
from lib.sampling import (
    Completion,
    _check,
    _layer_kv,
    _Prefill,
    _prefill,
    _Rows,
    cache_kwarg,
)

_GQA_DECODE = "polychromic_gqa_decode"
# The graphed CUDA step's own kernels (lib.decode_kernels: matmul attention for the new token,
# fused RMSNorm). Off, the step runs transformers' modules as the CPU does (bench/generate.py
# measures both).
CUDA_DECODE_KERNELS = True
# Steps between checks that every row has ended: the check (`bool(rows.done.all())`) waits on the
# host for the GPU, so done every step it stalls the launch queue each step. Checked at t = 0, k,
# 2k, ...: a batch whose rows have all ended decodes at most k - 1 steps of padding (finished rows
# write only padding: `_Rows.step`), outputs unchanged.
_DONE_CHECK_EVERY = 8


def _gqa_decode_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw
):
    """sdpa for one query token over grouped KV heads without repeating the cache.

    query (B, Hq, 1, D), key/value (B, Hkv, L, D): the G = Hq/Hkv query heads that share a KV
    head become G query positions against it, (B, Hkv, G, D), as `repeat_kv` pairs them. With a
    mask, transformers releases before 5.2x repeat K/V G times per layer instead: at 300+ rows
    that moves several times the weights' bytes a step.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, hq, q, d = query.shape
    hkv = key.shape[1]
    cuda_kernels = (
        CUDA_DECODE_KERNELS
        and query.is_cuda
        and attention_mask is not None
        and attention_mask.dtype == torch.bool
    )
    if q == 1 and cuda_kernels:  # cuDNN's sdpa wastes a 64-query tile on G rows: lib.decode_kernels
        scale = d**-0.5 if scaling is None else scaling
        out = matmul_decode_attention(query, key, value, attention_mask, scale)
    elif q != 1 or hq == hkv:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
    else:
        out = torch.nn.functional.scaled_dot_product_attention(
            query.reshape(b, hkv, hq // hkv, d), key, value, attn_mask=attention_mask, scale=scaling
        )  # (B, Hkv, G, D)
    return out.reshape(b, hq, 1, d).transpose(1, 2).contiguous(), None


def _register_gqa_decode() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(_GQA_DECODE, _gqa_decode_attention)
    return _GQA_DECODE


@contextmanager
def _attention(config: Any, name: str) -> Iterator[None]:
    """The model's attention function set to `name` for the duration (shared config object)."""
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old


def _capture(
    step: Callable[[], torch.Tensor], device: torch.device, what: str
) -> tuple[torch.Tensor, torch.cuda.CUDAGraph | None, torch.Tensor | None]:
    """(the first run's output, the graph, the graph's output buffer) of `step`: run once for real
    on a side stream (the warm-up a capture needs: cuBLAS workspaces, the allocator), then captured
    for replay. Re-running a step is harmless: it writes the same K/V into the same slots. A step
    that synchronises cannot be captured: then (output, None, None) and a warning. (Capturing the
    decode step without the warm-up saved ~10 ms of a 0.8 s call on an H200, and failed in a
    fresh process: the first capture hit a lazy initialisation.)"""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        first = step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = step()
    except RuntimeError as e:
        warnings.warn(
            f"StaticDecoder: CUDA graph capture failed, {what} uncaptured: {e}", stacklevel=3
        )
        return first, None, None
    return first, graph, out


def cache_counters(cache: Any) -> list[torch.Tensor]:
    """The write counters of a static cache's layers (transformers >= 5.2x keeps one per layer,
    `cumulative_length`, and writes there rather than at `cache_position`); none before that, or
    before the layers' first write allocates them."""
    found = (getattr(layer, "cumulative_length", None) for layer in getattr(cache, "layers", ()))
    return [c for c in found if isinstance(c, torch.Tensor)]


class StaticDecoder:
    """Fixed-shape sampling for `rows` prompts of at most `width` tokens and `max_new_tokens`.

    A transformers `StaticCache` allocated once and one decode step over fixed buffers (token,
    position, cache slot, a 4D mask of the slots each row attends to), so the step can replay as
    one CUDA graph instead of launching ~2k kernels a token (36 layers at 8B). `mode`:
    - "graph": the step's own eager kernels captured once with `torch.cuda.CUDAGraph`; a capture
      costs about one eager step, cheap enough for one decoder per batch shape (generate stage);
    - "compile": `torch.compile(mode="reduce-overhead")`, inductor's fused kernels in a graph after
      a ~2 min one-off compile (the trainer: one decoder per run);
    - "eager": the same step, uncompiled (CPU, tests).
    `prefill`: "dynamic" runs `sample`'s own `_prefill` (each distinct prompt once, eager) and
    copies its KV rows into the static cache, left-padded to `width`; "static" (the default on
    CUDA) packs the distinct prompts into a few fixed-length rows (`lib.prefill`: no padding's
    compute) and gathers their K/V into the decoder's cache, replayed as a CUDA graph once a
    packing shape recurs (an eager prefill through 36 LoRA-wrapped layers is launch-bound:
    ~150 ms at 8B for 8 prompts whose arithmetic takes ~25 ms). Each row then draws
    only from its own seed's uniforms through the same `_Rows` step as `sample`. Finished rows
    decode padding until every row has ended (no compaction; checked every `_DONE_CHECK_EVERY`
    steps). On CPU it samples exactly what `sample` samples; on CUDA the static cache's attention
    shapes differ from the dynamic cache's, so a bf16 near-tie can resolve to another token.
    """

    MODES = ("graph", "compile", "eager")

    def __init__(
        self,
        model: torch.nn.Module,
        rows: int,
        width: int,
        max_new_tokens: int,
        *,
        mode: str = "compile",
        prefill: str = "auto",
    ):
        from transformers import StaticCache

        if mode not in self.MODES:
            raise ValueError(f"StaticDecoder: mode '{mode}' is not one of {list(self.MODES)}")
        if prefill not in ("auto", "static", "dynamic"):
            raise ValueError(f"StaticDecoder: prefill '{prefill}' is not auto, static or dynamic")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model, self.rows, self.width, self.new = model, rows, width, max_new_tokens
        self.device = next(model.parameters()).device
        if mode == "graph" and self.device.type != "cuda":
            raise ValueError(f"StaticDecoder: mode 'graph' needs a CUDA model, not {self.device}")
        impl = getattr(base.config, "_attn_implementation", None) or "sdpa"
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"StaticDecoder: attention '{impl}' takes no 4D mask (sdpa, eager)")
        self.mode, self.length = mode, width + max_new_tokens
        if prefill == "auto":
            prefill = "dynamic" if mode == "eager" else "static"
        self.prefill = prefill
        self._prefills: dict[tuple[int, ...], PackedPrefill] = {}  # by packing shape
        self.cache = StaticCache(config=base.config, max_cache_len=self.length)
        long = {"dtype": torch.long, "device": self.device}
        self.ids = torch.zeros((rows, 1), **long)  # the step's input token
        self.pos = torch.zeros((rows, 1), **long)  # its position id (left padding aware)
        self.cache_pos = torch.zeros((1,), **long)  # its slot in the cache (the same for all rows)
        self.prompt_slots = torch.arange(width, **long)
        # The slots each row attends to, 4D in the attention's own form (bool for sdpa, additive
        # for eager): transformers then builds no mask, whose "all ones?" check would synchronise
        # inside a graph capture.
        dtype = base.get_input_embeddings().weight.dtype
        self._open, self._shut = (True, False) if impl == "sdpa" else (0.0, torch.finfo(dtype).min)
        self.mask = torch.full(
            (rows, 1, 1, self.length),
            self._shut,
            dtype=torch.bool if impl == "sdpa" else dtype,
            device=self.device,
        )
        self.kw = cache_kwarg(model)
        # sdpa steps go through `_gqa_decode_attention` (graph, eager; the compiled step keeps
        # transformers' own, as the trainer measured it).
        self._config = base.config
        self._attention = _register_gqa_decode() if impl == "sdpa" and mode != "compile" else None
        self._counters: list[torch.Tensor] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_out: torch.Tensor | None = None
        self.step = (
            torch.compile(self._step, mode="reduce-overhead", dynamic=False)
            if mode == "compile"
            else self._step
        )

    def _step(self) -> torch.Tensor:
        # Static layers of transformers >= 5.2x write at their own counter, not at
        # `cache_position`; setting it from the slot buffer inside the step keeps a re-run step
        # (warm-up, graph replay) writing where it should.
        for counter in self._counters or ():
            counter.copy_(self.cache_pos[0])
        if self._attention is None:  # compiled: no config switching inside the traced function
            return self._forward()
        with _attention(self._config, self._attention), self._norms():
            return self._forward()

    def _norms(self) -> AbstractContextManager:
        """RMSNorm fused for a CUDA step (graph or eager); transformers' own elsewhere."""
        if CUDA_DECODE_KERNELS and self.device.type == "cuda" and self.mode != "compile":
            return fused_rms_norms(self.model)
        return nullcontext()

    def _forward(self) -> torch.Tensor:
        return self.model(
            input_ids=self.ids,
            position_ids=self.pos,
            cache_position=self.cache_pos,
            attention_mask=self.mask,
            use_cache=True,
            **{self.kw: self.cache},
        ).logits[:, -1, :]

    def _run(self) -> torch.Tensor:
        """One decode step from the buffers: (rows, V) logits, valid until the next step."""
        if self.mode != "graph":
            return self.step()
        if self._graph is not None:
            self._graph.replay()
            return self._graph_out  # type: ignore[return-value]
        logits, self._graph, self._graph_out = _capture(self._step, self.device, "decoding")
        if self._graph is None:
            self.mode = "eager"
        return logits

    def _find_counters(self) -> None:
        if self._counters is None:
            self._counters = cache_counters(self.cache)

    def init_cache(self, like: torch.Tensor) -> None:
        """Allocate the cache's layers (transformers allocates them at their first write) for K/V
        shaped and typed like `like` (B, H, P, D), by writing zeros to slot 0 of each."""
        if self._counters is not None:
            return
        zeros = like.new_zeros((self.rows, like.shape[1], 1, like.shape[3]))
        for layer in range(int(self._config.num_hidden_layers)):
            self.cache.update(zeros, zeros, layer, {"cache_position": self.prompt_slots[:1]})
        self._find_counters()

    def _fill_cache(self, pre: _Prefill) -> None:
        """The prompts' KV rows into slots [0, width), left-padded; later slots stay empty."""
        w, p = self.width, pre.mask.shape[1]
        self.cache.reset()
        for layer, (k, v) in enumerate(_layer_kv(pre.cache)):
            if pre.expand is not None:  # (U, H, P, D) distinct prompts -> (rows, H, P, D)
                k, v = k.index_select(0, pre.expand), v.index_select(0, pre.expand)
            if p < w:
                k = torch.cat([k.new_zeros((*k.shape[:2], w - p, k.shape[3])), k], 2)
                v = torch.cat([v.new_zeros((*v.shape[:2], w - p, v.shape[3])), v], 2)
            self.cache.update(k, v, layer, {"cache_position": self.prompt_slots})
        self._find_counters()
        self.mask.fill_(self._shut)
        self.mask[:, 0, 0, w - p : w].masked_fill_(pre.mask.bool(), self._open)

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
        _check(prompts, seeds, temperature, top_p)
        if len(prompts) != self.rows:
            raise ValueError(f"StaticDecoder: built for {self.rows} rows, got {len(prompts)}")
        if max(len(p) for p in prompts) > self.width:
            raise ValueError(f"StaticDecoder: a prompt is longer than the width {self.width}")
        w, new = self.width, self.new
        rows = _Rows(seeds, new, eos_token_ids, pad_token_id, temperature, top_p, self.device)
        if self.prefill == "static":
            logits, step_pos, slots = packed_prefill(self, prompts, pad_token_id)
            self.mask.fill_(self._shut)
            self.mask[:, 0, 0, :w].masked_fill_(slots, self._open)
        else:
            pre = _prefill(self.model, prompts, pad_token_id, self.device)
            self._fill_cache(pre)
            logits, step_pos = pre.logits, pre.last_pos
            del pre
        for t in range(new):
            nxt = rows.step(logits, t)
            if t == new - 1 or (t % _DONE_CHECK_EVERY == 0 and bool(rows.done.all())):
                break
            step_pos = step_pos + 1
            self.ids.copy_(nxt[:, None])
            self.pos.copy_(step_pos)
            self.cache_pos.fill_(w + t)
            self.mask[:, 0, 0, w + t] = self._open
            # A copy: a CUDA graph reuses its output buffer on the next replay.
            logits = self._run().clone()  # model dtype: `_Rows.step` upcasts for the draw
        return rows.completions()

    @staticmethod
    def bytes_per_row(config: object, width: int, max_new_tokens: int) -> int:
        """Device memory a row takes beyond the weights: its bf16 KV cache slots plus the
        sampler's (V,)-wide temporaries (logits, probabilities, a float64 cumsum, a sort)."""
        c: Any = config
        heads = int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads)
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
        kv = 2 * int(c.num_hidden_layers) * heads * head_dim * 2 * (width + max_new_tokens)
        return kv + 96 * int(c.vocab_size)
