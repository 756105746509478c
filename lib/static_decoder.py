"""`StaticDecoder`: the graphed decoder that training and the generate stage share on a GPU.

A fixed-shape counterpart of `lib.sampling.sample`: the same prefill (`_prefill`) and per-row draw
(`_Rows`), a static KV cache, and one decode step over fixed buffers that replays as a CUDA graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from lib.sampling import Completion, _check, _layer_kv, _Prefill, _prefill, _Rows, cache_kwarg

_GQA_DECODE = "polychromic_gqa_decode"


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
    if q != 1 or hq == hkv:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
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
    Prompts are prefilled by `sample`'s own `_prefill` (each distinct prompt once) and their KV rows
    copied into the static cache, left-padded to `width`; each row then draws only from its own
    seed's uniforms through the same `_Rows` step as `sample`. Finished rows decode padding until
    every row has ended (no compaction). On CPU it samples exactly what `sample` samples; on CUDA
    the static cache's attention shapes differ from the dynamic cache's, so a bf16 near-tie can
    resolve to another token.
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
    ):
        from transformers import StaticCache

        if mode not in self.MODES:
            raise ValueError(f"StaticDecoder: mode '{mode}' is not one of {list(self.MODES)}")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model, self.rows, self.width, self.new = model, rows, width, max_new_tokens
        self.device = next(model.parameters()).device
        if mode == "graph" and self.device.type != "cuda":
            raise ValueError(f"StaticDecoder: mode 'graph' needs a CUDA model, not {self.device}")
        impl = getattr(base.config, "_attn_implementation", None) or "sdpa"
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"StaticDecoder: attention '{impl}' takes no 4D mask (sdpa, eager)")
        self.mode, self.length = mode, width + max_new_tokens
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
        with _attention(self._config, self._attention):
            return self._forward()

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
        # First step: run it for real on a side stream (the warm-up a capture needs: cuBLAS
        # workspaces, the allocator), then capture the same step for the later ones. Re-running a
        # step is harmless: it writes the same K/V into the same slot.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            logits = self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._graph_out = self._step()
        except RuntimeError as e:  # a forward that synchronises cannot be captured
            warnings.warn(
                f"StaticDecoder: CUDA graph capture failed, decoding uncaptured: {e}", stacklevel=2
            )
            self.mode = "eager"
            return logits
        self._graph = graph
        return logits

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
        if self._counters is None:
            layers = getattr(self.cache, "layers", ())
            found = (getattr(layer, "cumulative_length", None) for layer in layers)
            self._counters = [c for c in found if isinstance(c, torch.Tensor)]
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
        pre = _prefill(self.model, prompts, pad_token_id, self.device)
        self._fill_cache(pre)
        logits, step_pos = pre.logits, pre.last_pos
        del pre
        for t in range(new):
            nxt = rows.step(logits, t)
            if t == new - 1 or bool(rows.done.all()):
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
