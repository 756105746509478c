"""The graphed decoder's prefill (`StaticDecoder(prefill="static")`, the CUDA default): the distinct
prompts packed into a few rows of fixed length, each prompt attending only to itself.

Left-padding every prompt to the decoder's width wastes the padding's compute: Qwen3-8B prompts of
24-117 tokens padded to a width of 128 are 45% padding, and at 8B the prefill is compute-bound
(the issue-20 bench measured it at 110-140 ms of a 770 ms call). Packed first-fit-decreasing into
rows of `max(width, PACK_ROW)` slots they are ~10% padding. A block-diagonal causal mask keeps each
prompt to its own tokens and position ids restart at 0 for each, so every prompt's logits and K/V
are those of its own padded forward (up to the rounding of another matmul shape). The K/V rows
are then gathered into the decoder's cache, right-aligned in slots [0, width) as `_fill_cache`
leaves them.

One `PackedPrefill` (fixed buffers, own static cache, optional CUDA graph) per packing shape
(distinct prompts u, rows b, most prompts in a row k). Its first use runs eagerly (a shape seen
once, as a stage's single large batch is, is never captured); a second use captures it, later
uses replay the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lib.packing import first_fit_decreasing
from lib.sampling import _layer_kv, _logits_kwarg, distinct_prompts

if TYPE_CHECKING:
    from lib.static_decoder import StaticDecoder

# Packed rows are at least this long (and at least the decoder's width): a row holds several
# prompts, and its attention cost (row length squared) stays small next to its matmuls.
PACK_ROW = 256
# Captured prefill shapes a decoder keeps: each graph holds its own activation pool.
MAX_GRAPHS = 8


class PackedPrefill:
    """Fixed buffers of a decoder's prefill for `u` distinct prompts packed into `b` rows of `n`
    slots, at most `k` prompts a row: ids, position ids and a (b, 1, n, n) mask, a static cache
    of n slots, the kept logit positions and where each (decoder row, cache slot) reads its K/V
    from."""

    def __init__(self, dec: StaticDecoder, u: int, b: int, k: int, n: int):
        from transformers import StaticCache

        self.dec = dec
        base = dec.model.get_base_model() if hasattr(dec.model, "get_base_model") else dec.model
        self.cache = StaticCache(config=base.config, max_cache_len=n)
        long = {"dtype": torch.long, "device": dec.device}
        self.ids = torch.zeros((b, n), **long)
        self.pos = torch.zeros((b, n), **long)
        self.slots = torch.arange(n, **long)
        self.mask = torch.full((b, 1, n, n), dec._shut, dtype=dec.mask.dtype, device=dec.device)
        # Positions whose logits are kept: one list for every row (transformers before 5.2x take
        # a 1-D `logits_to_keep` only), each row's last tokens in its k entries, (b * k,).
        self.keep = torch.zeros((b * k,), **long)
        self.pick = torch.zeros((u,), **long)  # prompt j's logits in the flattened (b * b * k)
        self.src_row = torch.zeros((dec.rows, dec.width), **long)  # K/V source of decoder row r,
        self.src_pos = torch.zeros((dec.rows, dec.width), **long)  # slot s: (packed row, position)
        self.by_tensor = _logits_kwarg(dec.model) == "logits_to_keep"
        self.uses = 0
        self.uncapturable = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def fill(self, prompts: list[tuple[int, ...]], rows: list[list[int]], expand: list[int],
             pad_token_id: int) -> None:  # fmt: skip
        """The buffers for distinct `prompts` packed as `rows`, decoder row r showing prompt
        `expand[r]`, right-aligned in its slots [0, width)."""
        b, n = self.ids.shape
        w = self.dec.width
        ids = torch.full((b, n), pad_token_id, dtype=torch.long)
        pos = torch.zeros((b, n), dtype=torch.long)
        # Filler slots attend to themselves only (a fully masked query gives NaN K/V).
        allowed = torch.eye(n, dtype=torch.bool).repeat(b, 1, 1)
        keep = torch.zeros(self.keep.shape, dtype=torch.long)
        pick = torch.zeros(self.pick.shape, dtype=torch.long)
        start = [0] * len(prompts)
        where = [0] * len(prompts)
        k = keep.shape[0] // b
        for r, members in enumerate(rows):
            at = 0
            for c, j in enumerate(members):
                m = len(prompts[j])
                ids[r, at : at + m] = torch.tensor(prompts[j])
                pos[r, at : at + m] = torch.arange(m)
                allowed[r, at : at + m, at : at + m] = torch.ones((m, m), dtype=torch.bool).tril()
                keep[r * k + c] = at + m - 1
                pick[j] = r * (b * k) + r * k + c  # row r's logits at its own entry
                start[j], where[j] = at, r
                at += m
        slot = torch.arange(w)
        src_row = torch.tensor([where[j] for j in expand])[:, None].expand(-1, w)
        lens = torch.tensor([len(prompts[j]) for j in expand])[:, None]  # (rows, 1)
        first = torch.tensor([start[j] for j in expand])[:, None]
        # Slot s of a prompt of m tokens holds its token s - (w - m); padding slots (masked in the
        # decoder) read the prompt's first token, any finite K/V.
        src_pos = first + (slot[None] - (w - lens)).clamp(min=0)
        self.ids.copy_(ids)
        self.pos.copy_(pos)
        shut = torch.tensor(self.dec._shut, dtype=self.mask.dtype)
        opened = torch.tensor(self.dec._open, dtype=self.mask.dtype)
        self.mask.copy_(torch.where(allowed, opened, shut)[:, None])
        self.keep.copy_(keep)
        self.pick.copy_(pick)
        self.src_row.copy_(src_row)
        self.src_pos.copy_(src_pos)

    def _step(self) -> torch.Tensor:
        from lib.static_decoder import cache_counters

        dec = self.dec
        for counter in cache_counters(self.cache):  # a packed prefill writes from slot 0
            counter.zero_()
        with dec._norms():
            res = dec.model(
                input_ids=self.ids,
                position_ids=self.pos,
                cache_position=self.slots,
                attention_mask=self.mask,
                use_cache=True,
                **{dec.kw: self.cache},
                **({"logits_to_keep": self.keep} if self.by_tensor else {}),
            )
        logits = res.logits  # (b, b * k, V), or (b, n, V) where the model keeps all positions
        if not self.by_tensor:
            logits = logits[:, self.keep]
        w = dec.width
        dec.init_cache(_layer_kv(self.cache)[0][0])  # a first (eager) run allocates it
        for (k, v), (dk, dv) in zip(_layer_kv(self.cache), _layer_kv(dec.cache), strict=True):
            # (b, H, n, D)[src_row, :, src_pos] -> (rows, w, H, D) -> (rows, H, w, D)
            dk[:, :, :w].copy_(k[self.src_row, :, self.src_pos].transpose(1, 2))
            dv[:, :, :w].copy_(v[self.src_row, :, self.src_pos].transpose(1, 2))
        return logits.flatten(0, 1).index_select(0, self.pick)  # (b * b * k, V) -> (u, V)

    def run(self, captured: int) -> torch.Tensor:
        """(u, V) last-token logits, the prompts' K/V in the decoder's cache. `captured`: how many
        prefill graphs the decoder holds already."""
        from lib.static_decoder import _capture

        self.uses += 1
        if self.graph is not None:
            self.graph.replay()
            return self.out  # type: ignore[return-value]
        eager = self.dec.mode == "eager" or self.dec.device.type != "cuda"
        if eager or self.uses == 1 or captured >= MAX_GRAPHS or self.uncapturable:
            return self._step()
        logits, self.graph, self.out = _capture(self._step, self.dec.device, "prefilling")
        self.uncapturable = self.graph is None  # warned once; eager from now on
        return logits


def packed_prefill(
    dec: StaticDecoder, prompts: Sequence[Sequence[int]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, V) next-token logits, (rows, 1) last position ids and the (rows, width) prompt
    slots of each decoder row, with the prompts' K/V in slots [0, width) of `dec.cache`."""
    uniq, expand = distinct_prompts(prompts)
    n = max(dec.width, PACK_ROW)
    rows = first_fit_decreasing([len(p) for p in uniq], n)
    shape = (len(uniq), len(rows), max(map(len, rows)), n)
    st = dec._prefills.get(shape)
    if st is None:
        st = dec._prefills[shape] = PackedPrefill(dec, *shape)
    st.fill(uniq, rows, expand, pad_token_id)
    captured = sum(p.graph is not None for p in dec._prefills.values())
    logits = st.run(captured).clone()  # (u, V): a graph reuses its output buffer
    lens = torch.tensor([len(uniq[j]) for j in expand])  # (rows,)
    slots = torch.arange(dec.width)[None] >= (dec.width - lens)[:, None]  # (rows, width)
    at = torch.tensor(expand, device=dec.device)
    return logits.index_select(0, at), (lens - 1)[:, None].to(dec.device), slots.to(dec.device)
