"""One token per row from a (B, V) distribution under top-p: the draw `lib.sampling` decodes with.

`draw(probs, u, top_p)` is a function of its arguments alone (row i's token depends on row i and
u_i only), so a sample can be reproduced alone. top_p = 1 is an inverse CDF; top_p < 1 is an
exponential race over the nucleus whose noise is a hash of (u, token id). The nucleus is taken in
a canonical order (probability descending, ties by position). `_nucleus_keep` sorts to get it;
`_nucleus_keep_threshold` finds the same set with no sort. A row whose nucleus is not inside its
256 likeliest tokens needs it over the whole vocabulary (`_full_nucleus`): on CUDA, from 2^24
probabilities on, the threshold nucleus compiled by inductor (2.5 ms against the sort's 6.8 ms at
320 rows × 151,936 tokens on an H200); the sort below that, and on a CPU, where 31 eager masked
sums are slower than the sort (as they are on the H200: 17 ms). CPU draws are therefore
unchanged. `draw_rejection` (what `lib.sampling` draws with on CUDA) finds the same token with no
nucleus at all: the race's R best tokens over the whole vocabulary, the first of them in the
nucleus by a membership test (masked float64 sums), compiled by inductor into a few passes over
(B, V) with no host sync; rows whose R best all miss it (probability <= (1 - top_p)^R) fall back
to `draw`. bench/draw.py measures all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

_TOPK_FIRST = 256  # candidates tried before the full-vocabulary nucleus for top-p
_M32 = 0xFFFFFFFF


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


def _nucleus_keep_threshold(vals: torch.Tensor, top_p: float) -> torch.Tensor:
    """`_nucleus_keep` without a sort: vals (B, V) float32 ≥ 0 → the same zeroed copy.

    With S(>y) the row's float64 mass strictly above y, the smallest kept value is
    x* = min{y in the row : S(>y) < top_p}; every value above x* is kept, and of the values equal
    to x* those whose mass before them in the canonical order, S(>x*) + x*·(equal values at a
    smaller index), is < top_p. x* comes from 31 bisection steps over float32 bit patterns, each
    a (B, V) masked sum: fixed shapes and no host sync, so a CUDA graph can hold it.

    In exact arithmetic this is `_nucleus_keep`'s set. Both sum in float64 but in different
    orders (a sorted running sum there, a reduction of each masked row here), so a token whose
    mass before it lies within float64 rounding (~1e-16 relative) of top_p can land on either
    side: membership of that one edge token, never the rest of the nucleus. E.g. [1/4, 1/4,
    3·2^-56] at top_p = 1/2: its mass before is exactly 1/2, excluded here, while the sorted
    path's `cumsum - self` rounds it to 1/2 - 2^-54 and keeps it.
    """
    if vals.dtype != torch.float32:
        raise TypeError(f"_nucleus_keep_threshold needs float32 values, not {vals.dtype}")
    bits = vals.view(torch.int32)  # non-negative floats order like their bit patterns
    v64 = vals.double()
    # Invariant: S(>hi) < top_p (S(>max) = 0), and every y < lo has S(>y) >= top_p; `above`
    # holds S(>hi) so the tie rule below uses the very sum that accepted x*.
    lo = torch.zeros_like(bits[:, :1], dtype=torch.long)
    hi = bits.amax(-1, keepdim=True).long()
    above = torch.zeros_like(v64[:, :1])
    for _ in range(31):  # hi - lo < 2**31: converged, and further steps leave lo = hi alone
        mid = lo + (hi - lo) // 2
        mass = torch.where(bits > mid.int(), v64, 0.0).sum(-1, keepdim=True)
        # j = 0: S(>mid) < top_p, mid is the new hi; j = 1: mid + 1 is the new lo. Picked by
        # argmax and gather, not torch.where: compiled by inductor, the where form ran 1.7× slower
        # (3.2 vs 1.9 ms at 320 × 151,936 on an H200) and the plain gather form failed to build.
        j = torch.cat([mass < top_p, torch.ones_like(mass, dtype=torch.bool)], -1)
        j = j.int().argmax(-1, keepdim=True)
        ends = torch.cat([lo - 1, mid, hi], -1)
        hi, above = ends.gather(-1, j + 1), torch.cat([mass, above], -1).gather(-1, j)
        lo = ends.gather(-1, j) + 1
    # S(>x*-1) >= top_p > S(>x*) puts mass at x*, so x* is one of the row's values (or 0, when
    # the whole row weighs less than top_p and every token stays).
    x = hi.int().view(torch.float32)  # (B, 1)
    tied = vals == x
    before = above + x.double() * (tied.cumsum(-1, dtype=torch.int32) - 1)
    return vals.masked_fill(~((vals > x) | (tied & (before < top_p))), 0.0)


_COMPILED: list = []  # the threshold nucleus compiled for CUDA, built on first use
# The compiled nucleus's 31 dependent steps cost 1.2-1.9 ms of launches whatever the size: on an
# H200 it takes 2.5 ms for 320 rows of 151,936 against the sort's 6.8 ms, but 1.2-1.9 ms for 32
# rows against 0.9 (bench/draw.py). 2^24 probabilities (~110 such rows) is an estimate of where
# the two cross, between those two measured points.
_COMPILE_MIN = 2**24


def _compiled_threshold():
    if not _COMPILED:
        # dynamic: the number of rows changes from step to step (one more build for a single row).
        _COMPILED.append(torch.compile(_nucleus_keep_threshold, dynamic=True))
    return _COMPILED[0]


def _full_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The top-p nucleus of rows (B, V) over the whole vocabulary, as `_nucleus_keep` defines it."""
    cuda = probs.device.type == "cuda" and probs.dtype == torch.float32
    if not cuda or probs.numel() < _COMPILE_MIN:
        return _nucleus_keep(probs, top_p)
    try:
        return _compiled_threshold()(probs, top_p)
    except Exception as e:  # inductor can fail to build a shape; the sort is exact too
        warnings.warn(f"top-p: the compiled threshold nucleus failed, sorting: {e}", stacklevel=2)
        _COMPILED[:] = [_nucleus_keep]
        return _nucleus_keep(probs, top_p)


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
    h = _mix32(id_hash ^ _u_key(u)[:, None]) >> 8  # (B, K), 24 bits: exact in float32
    return _exponential(h)


def _u_key(u: torch.Tensor) -> torch.Tensor:
    return (u.double() * 2.0**32).long().clamp(max=_M32)  # (B,) int64 < 2**32


def _exponential(h: torch.Tensor) -> torch.Tensor:
    # 24-bit hashes → Exponential(1): U in (0, 1) strictly, so E > 0.
    return -torch.log((h.float() + 0.5) * 2.0**-24)


def _race(kept: torch.Tensor, id_hash: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # Exponential race: argmax p_j / E_j is a draw from p (zero-mass tokens never win). A token
    # entering or leaving the nucleus by float noise changes the result only if it would win.
    # Returns the winning column.
    return (kept.float() / token_noise(u, id_hash)).argmax(-1)


def draw(probs: torch.Tensor, u: torch.Tensor, top_p: float, *, full=_full_nucleus) -> torch.Tensor:
    """One token per row from `probs` (B, V) restricted to its top-p nucleus, driven by u (B,).

    A draw from `_filter_top_p(probs, top_p)`. top_p = 1: inverse CDF over the vocabulary in
    token-id order (near-equal probabilities swap ranks under float noise, batched vs alone; id
    order only nudges interval edges). top_p < 1: an exponential race whose per-token noise is a
    hash of (u, token id), because a nucleus edge that moves by one token would shift every
    inverse-CDF interval after it. Candidates are the 256 likeliest tokens when the nucleus lies
    inside them, else the whole vocabulary (`full`: a test or bench passes either nucleus to
    compare them); both give the same token.
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
    # A 256-wide sort is cheaper than 31 masked sums.
    col = _race(_nucleus_keep(top_vals.gather(-1, order), top_p), table[top_idx], u)
    out = top_idx.gather(-1, col.unsqueeze(-1)).squeeze(-1)
    if k < vocab and not bool(fits.all()):
        rows = (~fits).nonzero().squeeze(-1)
        out[rows] = _race(full(probs[rows], top_p), table[None, :], u[rows])
    return out


# Rejection rounds per draw_rejection call. A row falls back to `draw` after R rejected rounds,
# with probability at most (1 - top_p)^R a row and step: 1e-4 at top_p 0.9, i.e. ~1 row of the
# 10,240 a 320-row × 32-token bench batch draws.
REJECTION_ROUNDS = 4
PROPOSALS = ("ranked", "independent")  # the default first
_ROUND_SALT = 0x9E3779B9  # round r's key: mix32(u's key + (r + 1)·salt), never u's key itself


def _in_nucleus(probs: torch.Tensor, tok: torch.Tensor, top_p: float) -> torch.Tensor:
    """Whether each token of tok (B, R) is in its row's nucleus as `_nucleus_keep` takes it: its
    mass before it in the canonical order, S(>p_j) + p_j·#{i < j : p_i = p_j}, is < top_p (float64
    sums of the float32 values, no float64 copy of probs) → (B, R) bool."""
    p = probs[:, None, :]  # (B, 1, V)
    pj = probs.gather(-1, tok)[..., None]  # (B, R, 1)
    above = torch.where(p > pj, p, 0.0).sum(-1, dtype=torch.float64)
    ids = torch.arange(probs.shape[-1], device=probs.device)
    ties = ((p == pj) & (ids < tok[..., None])).sum(-1)  # equal values at a smaller index
    return above + pj[..., 0].double() * ties < top_p


def _independent(probs, u, table, start: int, count: int) -> torch.Tensor:
    """Rounds start .. start+count-1 of independent races over the full distribution: (B, count)."""
    r = torch.arange(start + 1, start + count + 1, dtype=torch.long, device=probs.device)
    keys = _mix32((_u_key(u)[:, None] + r * _ROUND_SALT) & _M32)  # (B, count): one per round
    noise = _exponential(_mix32(table ^ keys[:, :, None]) >> 8)  # (B, count, V)
    return (probs[:, None, :] / noise).argmax(-1)


def _ranked(probs, u, table, rounds: int) -> torch.Tensor:
    """The R best tokens of `draw`'s own race over the whole vocabulary, best first, ties by
    position (each an argmax with the earlier winners masked out, as `_race`'s argmax breaks
    ties): (B, R)."""
    score = probs / token_noise(u, table[None, :])  # (B, V), ≥ 0; a fresh tensor, ours to mask
    winners: list[torch.Tensor] = []
    for r in range(rounds):
        winners.append(score.argmax(-1, keepdim=True))  # (B, 1)
        if r < rounds - 1:  # each winner masked once, in place: R - 1 writes of B values
            score.scatter_(-1, winners[-1], -1.0)
    return torch.cat(winners, -1)


def _rejection_core(probs, u, table, top_p: float, rounds: int, group: int, proposals: str):
    # `group` rounds at a time: 1 eagerly (temporaries of (B, 1, V)), all of them compiled.
    starts = range(0, rounds, group)
    if proposals == "ranked":
        tok = _ranked(probs, u, table, rounds)  # (B, rounds)
    else:
        tok = torch.cat(
            [_independent(probs, u, table, s, min(group, rounds - s)) for s in starts], -1
        )
    ok = torch.cat([_in_nucleus(probs, tok[:, s : s + group], top_p) for s in starts], -1)
    first = ok.int().argmax(-1, keepdim=True)  # the first accepted round (0 if none)
    return tok.gather(-1, first).squeeze(-1), ~ok.any(-1)


_COMPILED_REJECTION: dict[tuple[int, str], Callable] = {}  # the rounds compiled for CUDA


def _compiled_rejection(rounds: int, proposals: str) -> Callable:
    key = (rounds, proposals)
    if key not in _COMPILED_REJECTION:

        def core(probs, u, table, top_p):  # all rounds in one group: few fused passes over (B, V)
            return _rejection_core(probs, u, table, top_p, rounds, rounds, proposals)

        # dynamic: the number of rows changes from step to step, as for `_compiled_threshold`.
        _COMPILED_REJECTION[key] = torch.compile(core, dynamic=True, fullgraph=True)
    return _COMPILED_REJECTION[key]


def rejection_rounds(
    probs: torch.Tensor,
    u: torch.Tensor,
    top_p: float,
    rounds: int = REJECTION_ROUNDS,
    *,
    proposals: str = "ranked",
    compiled: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`draw_rejection` without its fallback and with no host sync: (tokens (B,), rejected (B,)).

    A rejected row's token is a rejected proposal, not a draw: the caller redraws those rows with
    `draw` (a CUDA graph can hold this part; the fallback stays outside). `compiled`: None = the
    inductor build on CUDA float32, eager elsewhere; True/False force it (tests, bench). Compiled,
    the R proposals are built in few passes over (B, V) ("ranked": one pass computes and keeps
    the race's scores, then R - 1 masked argmax passes over them; "independent": the R races in
    one group) and the R membership sums fuse into one more; eager, "independent" runs a round
    at a time. Compiled and eager give the same tokens up to the last bits of the log in the
    noise (inductor's log can differ from eager's there).
    """
    if rounds < 1:
        raise ValueError(f"rejection_rounds: rounds must be >= 1, not {rounds}")
    if proposals not in PROPOSALS:
        raise ValueError(f"rejection_rounds: proposals '{proposals}' is not one of {PROPOSALS}")
    table = _id_hash(probs.shape[-1], probs.device)
    if compiled is None:
        compiled = probs.device.type == "cuda" and probs.dtype == torch.float32
    if compiled:
        try:
            return _compiled_rejection(rounds, proposals)(probs, u, table, top_p)
        except Exception as e:  # inductor can fail to build a shape; the eager rounds are exact
            warnings.warn(f"top-p: the compiled rejection rounds failed, eager: {e}", stacklevel=2)
            _COMPILED_REJECTION[(rounds, proposals)] = lambda p, uu, t, tp: _rejection_core(
                p, uu, t, tp, rounds, 1, proposals
            )
    return _rejection_core(probs, u, table, top_p, rounds, 1, proposals)


def draw_rejection(
    probs: torch.Tensor,
    u: torch.Tensor,
    top_p: float,
    rounds: int = REJECTION_ROUNDS,
    *,
    proposals: str = "ranked",
    compiled: bool | None = None,
) -> torch.Tensor:
    """One token per row from `_filter_top_p(probs, top_p)` (B, V) by rejection, driven by u (B,).

    Round r = 1..R proposes a token j_r from the full distribution and accepts it iff j_r is in
    the nucleus N as `_nucleus_keep` takes it (p descending, ties by position), i.e. iff
        S(>p_j) + p_j · #{i < j : p_i = p_j} < top_p,   S(>y) = Σ_{p_i > y} p_i  (float64 sums),
    the tie rule of `_nucleus_keep_threshold`; a row keeps its first accepted proposal. Proposals
    come from the exponential race: with E_j ~ Exponential(1) a hash of u and the token id
    (`token_noise`), argmax_j p_j / E_j is a draw from p, and the order of p_j / E_j a sample of p
    without replacement (Efraimidis & Spirakis 2006; the Gumbel-max / Gumbel-top-k trick with
    G = -log E). `proposals`:
    - "ranked" (default): j_1..j_R are the R best tokens of `draw`'s own race (noise keyed by
      (u, token id)), best first, ties by position. The first of them in N is argmax over N of
      p_j / E_j, which is `draw`'s token: the same draw, found without computing N. Round r is
      rejected only if the r best are all outside N: probability <= (1 - p(N))^r (each pick
      without replacement lands outside N with probability (q - taken) / (1 - taken) <= q,
      q = 1 - p(N)).
    - "independent": j_r wins a race of its own, its noise keyed by (u, r, token id). The rounds
      are independent draws from p, so the first accepted one is a draw from p restricted to N
      and renormalised, i.e. from `_filter_top_p`, though not `draw`'s token; rejected after R
      rounds with probability (1 - p(N))^R.
    p(N) >= top_p (N's mass reaches top_p, or N is the whole row), so a row is still rejected
    after R rounds with probability <= (1 - top_p)^R (1e-4 at top_p 0.9 and R = 4), and only then
    drawn by the exact `draw`: for "ranked" the token the rounds would have found later, for
    "independent" a draw whose noise (keyed by u alone) is independent of the rounds'. The rounds
    have fixed shapes and no host sync (`rejection_rounds`); the fallback costs one host sync
    (`rejected.any()`). Row i's token depends on row i and u_i only. As with the threshold
    nucleus, a token whose mass before it lies within float64 rounding of top_p can land on
    either side of the edge. top_p = 1 is `draw`'s inverse CDF.
    """
    if top_p >= 1.0:
        return draw(probs, u, top_p)
    tok, rejected = rejection_rounds(
        probs, u, top_p, rounds, proposals=proposals, compiled=compiled
    )
    if bool(rejected.any()):  # the one host sync: almost never true
        rows = rejected.nonzero().squeeze(-1)
        tok = tok.index_put((rows,), draw(probs[rows], u[rows], top_p))
    return tok
