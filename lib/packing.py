"""Tree packing: prompts and all their continuations in one padding-free sequence.

A polychromic step needs, per example, CE on the reference and log π of N samples, all continuing
the same prompt. Padded batches pay for padding (references are 4–50 tokens, padded to the longest)
and for re-encoding every prompt per continuation. Packed as a tree, each prompt appears once and
each continuation attends to its own prompt and its own earlier tokens only (a 4D mask), positions
restart per example, and the LM head runs only where a token is predicted. One forward, one
backward, B·P + B·R + B·N·L tokens with no padding at all; exact up to float rounding (tests compare
it with unpacked forwards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Row width at which a row's attention (quadratic in width) would cost as much as its projections
# (linear). It only steers how groups are binned into rows (any value gives the same numbers). On
# SmolLM2 / CPU one ~1k-token row beat 6 padded rows of ~220 by 8% (padding cost more than the
# quadratic attention saved), so rows split only when they grow to several thousand tokens.
ATTN_WIDTH = 8192


@dataclass(frozen=True)
class TreePack:
    input_ids: torch.Tensor  # (R, W): groups binned into R rows, right-padded
    position_ids: torch.Tensor  # (R, W)
    allowed: torch.Tensor  # (R, W, W) bool: query t may attend key s (padding: itself only)
    keep: torch.Tensor  # (K,) flat indices into R·W of positions whose logits are needed (repeats)
    targets: torch.Tensor  # (K,) the token each kept position predicts
    owner: torch.Tensor  # (K,) the continuation (0 … C-1, in input order) each target belongs to
    n_continuations: int

    def additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """(R, 1, W, W): 0 where allowed, the dtype's minimum elsewhere (what eager and SDPA add)."""
        zero = torch.zeros((), dtype=dtype, device=self.allowed.device)
        neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=self.allowed.device)
        return torch.where(self.allowed, zero, neg)[:, None]


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` in rows whose lengths sum to at most `capacity` (each fits alone):
    longest first, each into the first row with room; ties by index, so the layout is a function
    of the lengths alone. Each row's indices ascending."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"packing: a length of {max(lengths)} exceeds a row of {capacity}")
    rows: list[list[int]] = []
    room: list[int] = []
    for g in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[g] <= free:
                rows[r].append(g)
                room[r] -= lengths[g]
                break
        else:
            rows.append([g])
            room.append(capacity - lengths[g])
    return [sorted(r) for r in rows]


def _layout(lengths: Sequence[int]) -> list[list[int]]:
    """Rows of group indices minimising padded tokens × (1 + width / ATTN_WIDTH)."""
    longest, total = max(lengths), sum(lengths)
    best: tuple[float, list[list[int]]] | None = None
    for f in (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0):
        rows = first_fit_decreasing(lengths, max(longest, int(longest * f)))
        width = max(sum(lengths[g] for g in r) for r in rows)
        cost = len(rows) * width * (1 + width / ATTN_WIDTH)
        if best is None or cost < best[0]:
            best = (cost, rows)
        if longest * f >= total:
            break
    assert best is not None
    return best[1]


def tree_pack(
    groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    device: torch.device,
    pad_id: int = 0,
) -> TreePack:
    """groups: (prompt ids, [continuation ids, …]) per example → packed rows.

    Continuations are numbered in order over all groups; empty ones own no target (their log-prob
    is 0). Every prompt must be non-empty (its last token predicts each continuation's first).
    """
    for g, (prompt, _) in enumerate(groups):
        if len(prompt) == 0:
            raise ValueError(f"group {g}: empty prompt, nothing predicts the first token")
    lengths = [len(p) + sum(len(c) for c in conts) for p, conts in groups]
    rows = _layout(lengths)
    width = max(sum(lengths[g] for g in r) for r in rows)
    n_rows = len(rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    block = torch.full((n_rows, width), -1, dtype=torch.long)  # group of each token, -1 = padding
    branch = torch.full((n_rows, width), -1, dtype=torch.long)  # continuation, -1 = prompt/pad
    cont_base = [0]
    for _, conts in groups:
        cont_base.append(cont_base[-1] + len(conts))
    targets: list[tuple[int, int, int, int]] = []  # (continuation, k, token, flat position)
    for r, members in enumerate(rows):
        at = 0
        for g in members:
            prompt, conts = groups[g]
            p = len(prompt)
            ids[r, at : at + p] = torch.tensor([int(t) for t in prompt])
            pos[r, at : at + p] = torch.arange(p)
            block[r, at : at + p] = g
            last = r * width + at + p - 1
            at += p
            for j, cont in enumerate(conts):
                c, n = cont_base[g] + j, len(cont)
                if n:
                    ids[r, at : at + n] = torch.tensor([int(t) for t in cont])
                    pos[r, at : at + n] = torch.arange(p, p + n)
                    block[r, at : at + n] = g
                    branch[r, at : at + n] = c
                    # Token k is predicted by the one before it (the prompt's last for k = 0).
                    flat = [last] + [r * width + at + k for k in range(n - 1)]
                    for k, (f, t) in enumerate(zip(flat, cont, strict=True)):
                        targets.append((c, k, int(t), f))
                at += n
    if not targets:
        raise ValueError("every continuation is empty: no token to score")
    # Targets in continuation order, so owner is sorted and continuation c's tokens are contiguous.
    targets.sort()
    idx = torch.arange(width)
    causal = idx[None, :] <= idx[:, None]  # (W, W): key s at or before query t
    same_group = block[:, :, None] == block[:, None, :]
    key_is_prompt = (branch == -1)[:, None, :]
    same_branch = branch[:, :, None] == branch[:, None, :]
    pad = (block == -1)[:, :, None] & torch.eye(width, dtype=torch.bool)[None]
    # A prompt token sees its earlier prompt tokens; a continuation token sees its prompt and its
    # own earlier tokens (never a sibling); padding sees only itself (a fully masked row is NaN).
    real = (block != -1)[:, :, None] & (block != -1)[:, None, :]
    allowed = (causal[None] & same_group & real & (key_is_prompt | same_branch)) | pad
    as_long = {"dtype": torch.long, "device": device}
    return TreePack(
        input_ids=ids.to(device),
        position_ids=pos.to(device),
        allowed=allowed.to(device),
        keep=torch.tensor([t[3] for t in targets], **as_long),
        targets=torch.tensor([t[2] for t in targets], **as_long),
        owner=torch.tensor([t[0] for t in targets], **as_long),
        n_continuations=cont_base[-1],
    )


def continuation_logprobs(
    logits: torch.Tensor, pack: TreePack
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (K, V) at `pack.keep` → (per-target log-probs (K,), per-continuation sums (C,))."""
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    tok = -torch.nn.functional.cross_entropy(z, pack.targets, reduction="none")  # (K,)
    sums = torch.zeros(pack.n_continuations, dtype=tok.dtype, device=tok.device)
    return tok, sums.index_add(0, pack.owner, tok)
