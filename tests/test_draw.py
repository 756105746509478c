"""The sort-free top-p nucleus (lib/draw.py `_nucleus_keep_threshold`) against the sort.

Only torch and lib.draw: the CUDA cases run on a GPU machine with `pytest tests/test_draw.py`.
"""

from __future__ import annotations

import pytest
import torch

from lib.draw import (
    _COMPILE_MIN,
    _compiled_threshold,
    _nucleus_keep,
    _nucleus_keep_threshold,
    draw,
)

TOP_P = (0.5, 0.8, 0.9, 0.95, 0.99)
NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]


def _scattered(vocab: int, values: list[float], g: torch.Generator) -> torch.Tensor:
    row = torch.zeros(vocab)
    row[torch.randperm(vocab, generator=g)[: len(values)]] = torch.tensor(values)
    return row


def _rows(vocab: int, seed: int = 0) -> torch.Tensor:
    """(14, vocab) float32 rows, one per shape of distribution the nucleus has to get right."""
    g = torch.Generator().manual_seed(seed)

    def randn() -> torch.Tensor:
        return torch.randn(vocab, generator=g)

    flat = torch.softmax(0.3 * randn(), -1)
    zeros = torch.softmax(randn(), -1) * (torch.rand(vocab, generator=g) > 0.4)
    spread = (0.005 / max(vocab - 1, 1)) * torch.ones(vocab)
    rows = [
        flat,  # random-weight logits: the nucleus is most of the vocabulary
        torch.softmax(randn(), -1),
        torch.softmax(6 * randn(), -1),  # peaked
        torch.softmax(20 * randn(), -1),  # one token near 1, many exactly 0 (float32 underflow)
        torch.full((vocab,), 1.0 / vocab),  # one tie group: the edge falls inside it
        torch.softmax(randn().round(), -1),  # a few levels, many exact ties at every level
        (flat * vocab * 8).round() / (vocab * 8),  # flat, quantized: ties at the edge
        zeros / zeros.sum(),  # zero-probability tokens
        spread.index_fill(0, torch.randint(vocab, (1,), generator=g), 0.995),  # top > top_p
        _scattered(vocab, [0.25, 0.25, 0.125, 0.125, 0.125, 0.125], g),  # mass before = top_p
        _scattered(vocab, [0.5, 0.25, 0.125, 0.0625, 0.0625], g),
        _scattered(vocab, [0.25] * 4, g),  # the 3rd has exactly top_p = 1/2 before it: out
        torch.softmax(randn(), -1) * 0.4,  # weighs less than any top_p: everything stays
        torch.zeros(vocab),
    ]
    return torch.stack(rows).float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("vocab", [7, 600, 49152, 151936])
@pytest.mark.parametrize("top_p", TOP_P)
def test_threshold_nucleus_keeps_exactly_what_the_sort_keeps(vocab, top_p, device):
    vals = _rows(vocab, seed=vocab).to(device)
    want = _nucleus_keep(vals, top_p)
    assert torch.equal(_nucleus_keep_threshold(vals, top_p), want)
    if device == "cuda":  # what draw runs there for many rows: the compiled threshold nucleus
        assert torch.equal(_compiled_threshold()(vals, top_p), want)


def test_threshold_nucleus_partial_tie_group_by_position():
    # 10 tokens of 0.1 (float32, a bit above 0.1): the first 5 by position make the nucleus of 0.5
    # (the 6th has 5 × 0.1f > 0.5 before it), whatever else is in the row.
    vals = torch.zeros(2, 40)
    vals[0, 3::4], vals[1, ::4] = 0.1, 0.1
    for p, n in ((0.5, 5), (0.45, 5), (0.95, 10), (0.05, 1)):
        kept = _nucleus_keep_threshold(vals, p)
        assert torch.equal(kept, _nucleus_keep(vals, p))
        assert [r.nonzero().flatten().tolist() for r in kept] == [
            list(range(3, 40, 4))[:n],
            list(range(0, 40, 4))[:n],
        ]


def test_threshold_nucleus_differs_only_by_rounding_at_top_p():
    # The known disagreement: 512 tokens of 2^-10, then tokens of 3·2^-56. The mass before each
    # light token is exactly 1/2 = top_p, so they are out; the sort's float64 `cumsum - self`
    # rounds it to 1/2 - 2^-54 and keeps them. Tokens that light never win the race (and the
    # heavy ones are not in the top 256 alone, so draw takes the full-vocabulary path).
    vals = torch.cat([torch.full((512,), 2.0**-10), torch.full((88,), 3 * 2.0**-56)])[None]
    old, new = _nucleus_keep(vals, 0.5), _nucleus_keep_threshold(vals, 0.5)
    assert torch.equal(old[:, :512], new[:, :512]) and (old[:, :512] > 0).all()
    assert (old[:, 512:] > 0).all() and (new[:, 512:] == 0).all()
    probs = vals.expand(2000, -1).contiguous()
    u = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = draw(probs, u, 0.5, full=_nucleus_keep_threshold)
    assert torch.equal(got, draw(probs, u, 0.5, full=_nucleus_keep)) and (got < 512).all()


def test_threshold_nucleus_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32"):
        _nucleus_keep_threshold(torch.ones(1, 4, dtype=torch.float64) / 4, 0.5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("vocab", "draws"), [(600, 256), (49152, 8)])
def test_draw_gives_the_same_tokens_through_either_nucleus(vocab, draws, device):
    rows = _rows(vocab, seed=1)
    rows = rows[rows.sum(-1) > 0.5]  # rows of a distribution, as draw gets them
    probs = rows.repeat_interleave(draws, 0).to(device)
    u = torch.rand(len(probs), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = u.to(device)
    full_rows = []

    def threshold(p: torch.Tensor, top_p: float) -> torch.Tensor:
        full_rows.append(len(p))
        return _nucleus_keep_threshold(p, top_p)

    for top_p in TOP_P:
        old = draw(probs, u, top_p, full=_nucleus_keep)
        assert torch.equal(draw(probs, u, top_p, full=threshold), old)
        assert torch.equal(draw(probs, u, top_p), old)  # the default (_full_nucleus)
        if device == "cuda":
            assert torch.equal(draw(probs, u, top_p, full=_compiled_threshold()), old)
    assert len(full_rows) == len(TOP_P)  # the full-vocabulary path ran at every top_p
    assert sum(full_rows) >= 3 * draws * len(TOP_P)  # flat, uniform, quantized rows at least


@NO_CUDA
def test_many_flat_rows_draw_through_the_compiled_nucleus_with_the_same_tokens():
    g = torch.Generator(device="cuda").manual_seed(3)
    probs = torch.softmax(0.3 * torch.randn(120, 151936, device="cuda", generator=g), -1)
    assert probs.numel() >= _COMPILE_MIN  # draw's default takes the compiled nucleus
    u = torch.rand(120, device="cuda", generator=g, dtype=torch.float64)
    for top_p in (0.5, 0.9, 0.99):
        assert torch.equal(draw(probs, u, top_p), draw(probs, u, top_p, full=_nucleus_keep))
