"""The top-p draw by rejection (lib/draw.py `draw_rejection`, what `_Rows` draws with on CUDA):
exact (its draws follow `_filter_top_p`), never outside the nucleus, reproducible row by row, and
never used on a CPU, whose draws stay `draw`'s.

Statistical checks use fixed seeds (deterministic) and a tolerance of 5 binomial standard
deviations per count: a correct sampler fails one with probability ~6e-7.
"""

from __future__ import annotations

import math

import pytest
import torch

import lib.sampling
from lib.draw import (
    PROPOSALS,
    REJECTION_ROUNDS,
    _filter_top_p,
    _id_hash,
    _nucleus_keep,
    _rejection_core,
    draw,
    draw_rejection,
    rejection_rounds,
)
from lib.sampling import _by_rejection, _Rows

NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]

# Six tokens, exact in float32. Canonical order (p descending, ties by position): 2 (0.25), then
# the tie group 1, 3, 5 (0.1875 each), then 0, then 4. At top_p 0.6 the nucleus is {2, 1, 3}
# (mass before 5 is 0.625): the edge cuts the tie group by position.
SIX = torch.tensor([0.125, 0.1875, 0.25, 0.1875, 0.0625, 0.1875])


def _uniforms(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _within(count: float, n: int, q: float, sds: float = 5.0) -> bool:
    return abs(count - n * q) <= sds * math.sqrt(n * q * (1 - q)) + 1e-9


def _check_frequencies(tokens: torch.Tensor, want: torch.Tensor) -> None:
    n = len(tokens)
    counts = torch.bincount(tokens, minlength=len(want)).double()
    for j, (c, q) in enumerate(zip(counts.tolist(), want.double().tolist(), strict=True)):
        assert _within(c, n, q), f"token {j}: {c:.0f} of {n}, expected {n * q:.0f}"


def _mixed_rows(n: int, vocab: int, seed: int) -> torch.Tensor:
    """(n, vocab) float32 distributions: flat (the nucleus is most of the vocabulary), peaked, and
    flat quantized to a few levels (exact ties everywhere, the edge inside a tie group)."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.softmax(0.3 * torch.randn(n, vocab, generator=g), -1)
    peaked = torch.softmax(6 * torch.randn(n, vocab, generator=g), -1)
    levels = torch.randint(1, 4, (n, vocab), generator=g).float()
    tied = levels / levels.sum(-1, keepdim=True)
    kind = torch.arange(n) % 3
    return torch.where((kind == 0)[:, None], flat, torch.where((kind == 1)[:, None], peaked, tied))


def _ranked_all_outside(outside: list[float], rounds: int, left: float = 1.0) -> float:
    """P(the `rounds` first picks of a sample of p without replacement all lie outside N)."""
    if rounds == 0:
        return 1.0
    return sum(
        q / left * _ranked_all_outside(outside[:i] + outside[i + 1 :], rounds - 1, left - q)
        for i, q in enumerate(outside)
    )


@pytest.mark.parametrize("proposals", PROPOSALS)
def test_rejection_draws_follow_the_nucleus_distribution(proposals):
    # (a) 20,000 draws of one distribution: frequencies of _filter_top_p's, whether a row is
    # accepted in a round or redrawn by the fallback; and rounds reject as often as they should:
    # independent rounds at (1 - p(N))^R (only if each round's noise is its own), ranked ones when
    # the race's R best are all outside N (tokens 0, 4, 5: never for R > 3).
    n, top_p = 20_000, 0.6
    probs, u = SIX.expand(n, -1).contiguous(), _uniforms(n)
    want = _filter_top_p(SIX[None], top_p)[0]
    assert torch.equal(want, torch.tensor([0, 0.3, 0.4, 0.3, 0, 0]))
    _check_frequencies(draw_rejection(probs, u, top_p, proposals=proposals), want)
    for rounds in (1, 2, 3, REJECTION_ROUNDS):
        tok, rejected = rejection_rounds(probs, u, top_p, rounds, proposals=proposals)
        if proposals == "independent":
            q = 0.375**rounds
        else:
            q = _ranked_all_outside([0.125, 0.0625, 0.1875], rounds)
        assert _within(int(rejected.sum()), n, q), (rounds, int(rejected.sum()), n * q)
        _check_frequencies(tok[~rejected], want)  # accepted proposals alone: p restricted to N


@pytest.mark.parametrize("proposals", PROPOSALS)
@pytest.mark.parametrize("top_p", [0.2, 0.3, 0.4375, 0.45, 0.6, 0.8, 0.95])
def test_a_proposal_is_accepted_exactly_when_it_is_in_the_nucleus(top_p, proposals):
    # (b) One round: every proposal is judged, so accepted ⇔ kept by _nucleus_keep for each of
    # 50,000 uniforms (every token gets proposed). top_p 0.4375 is exactly the mass before token 3
    # (out); at 0.6 token 5 ties with kept 1 and 3 but comes later (out).
    n = 50_000
    probs, u = SIX.expand(n, -1).contiguous(), _uniforms(n, seed=1)
    tok, rejected = rejection_rounds(probs, u, top_p, 1, proposals=proposals)
    assert set(tok.tolist()) == set(range(6))
    kept = _nucleus_keep(SIX[None], top_p)[0] > 0
    assert torch.equal(~rejected, kept[tok])
    assert kept[draw_rejection(probs, u, top_p, proposals=proposals)].all()


@pytest.mark.parametrize("proposals", PROPOSALS)
def test_rejection_draws_stay_in_the_nucleus_of_large_rows(proposals):
    # (b) Flat, peaked and tied rows of 600 tokens: every token drawn is in its row's nucleus.
    probs = _mixed_rows(600, 600, seed=2).repeat(4, 1)
    u = _uniforms(len(probs), seed=3)
    for top_p in (0.5, 0.9, 0.99):
        kept = _nucleus_keep(probs, top_p) > 0
        for rounds in (1, REJECTION_ROUNDS):
            tok = draw_rejection(probs, u, top_p, rounds, proposals=proposals)
            assert kept.gather(-1, tok[:, None]).all()


@pytest.mark.parametrize("proposals", PROPOSALS)
def test_a_row_draws_the_same_token_alone_as_in_any_batch(proposals):
    # (c) 300 rows, one round at top_p 0.9: about a tenth of the flat rows fall back to draw.
    probs, u = _mixed_rows(300, 600, seed=4), _uniforms(300, seed=5)
    others, u_others = _mixed_rows(300, 600, seed=6), _uniforms(300, seed=7)
    for rounds in (1, REJECTION_ROUNDS):
        batch = draw_rejection(probs, u, 0.9, rounds, proposals=proposals)
        if rounds == 1:
            assert 5 <= int(rejection_rounds(probs, u, 0.9, 1, proposals=proposals)[1].sum()) <= 60
        for i in range(300):
            alone = draw_rejection(probs[i : i + 1], u[i : i + 1], 0.9, rounds, proposals=proposals)
            assert torch.equal(alone, batch[i : i + 1]), i
        for i in range(0, 300, 37):  # row i among other rows, at another position
            mixed, mu = others.clone(), u_others.clone()
            mixed[150], mu[150] = probs[i], u[i]
            assert draw_rejection(mixed, mu, 0.9, rounds, proposals=proposals)[150] == batch[i], i


@pytest.mark.parametrize("proposals", PROPOSALS)
def test_rejected_rows_fall_back_to_the_exact_draw(proposals):
    # (d) One round at top_p 0.3: the nucleus is {2, 1} (mass 0.4375), so 56% of the rows are
    # rejected and redrawn by `draw`; the result still follows the nucleus distribution.
    n, top_p = 20_000, 0.3
    probs, u = SIX.expand(n, -1).contiguous(), _uniforms(n, seed=8)
    tok, rejected = rejection_rounds(probs, u, top_p, 1, proposals=proposals)
    assert _within(int(rejected.sum()), n, 0.5625)
    got = draw_rejection(probs, u, top_p, 1, proposals=proposals)
    assert torch.equal(got[rejected], draw(probs[rejected], u[rejected], top_p))
    assert torch.equal(got[~rejected], tok[~rejected])
    _check_frequencies(got, _filter_top_p(SIX[None], top_p)[0])


@pytest.mark.parametrize("proposals", PROPOSALS)
def test_all_rounds_in_one_group_is_the_round_by_round_loop(proposals):
    # The compiled build runs all rounds as one (B, R, V) group; eagerly it must be the same.
    probs, u = _mixed_rows(90, 600, seed=9), _uniforms(90, seed=10)
    table = _id_hash(600, probs.device)
    for rounds in (1, 3, REJECTION_ROUNDS):
        one = _rejection_core(probs, u, table, 0.9, rounds, 1, proposals)
        for group in (2, rounds):
            got = _rejection_core(probs, u, table, 0.9, rounds, group, proposals)
            assert all(torch.equal(a, b) for a, b in zip(got, one, strict=True)), (rounds, group)


@pytest.mark.parametrize("rounds", [1, 2, REJECTION_ROUNDS])
def test_ranked_proposals_give_draws_own_token(rounds):
    # "ranked": the first of the race's R best tokens in the nucleus is the race's winner over
    # the nucleus, `draw`'s token, whatever R (R only sets how often the fallback runs).
    probs = torch.cat([_mixed_rows(600, 600, seed=13), SIX.expand(300, -1).repeat(1, 100)])
    u = _uniforms(len(probs), seed=14)
    for top_p in (0.3, 0.6, 0.9, 0.99):
        tok, rejected = rejection_rounds(probs, u, top_p, rounds, proposals="ranked")
        want = draw(probs, u, top_p)
        assert torch.equal(tok[~rejected], want[~rejected])
        assert torch.equal(draw_rejection(probs, u, top_p, rounds, proposals="ranked"), want)
        if rounds == 1 and top_p == 0.6:
            assert int(rejected.sum()) >= 50  # the fallback ran on many rows


def test_ranked_proposals_come_in_race_order_ties_by_position(monkeypatch):
    # With every noise 1 the race's scores are the probabilities themselves: SIX's race order is
    # its canonical order, the tie group 1, 3, 5 by position.
    import lib.draw

    monkeypatch.setattr(lib.draw, "token_noise", lambda u, ids: torch.ones(len(u), ids.shape[-1]))
    probs, u = SIX.expand(2, -1).contiguous(), _uniforms(2)
    got = lib.draw._ranked(probs, u, _id_hash(6, probs.device), 6)
    assert got.tolist() == [[2, 1, 3, 5, 0, 4]] * 2


def test_rejection_arguments():
    probs, u = SIX.expand(4, -1).contiguous(), _uniforms(4)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        draw_rejection(probs, u, 0.9, rounds=0)
    with pytest.raises(ValueError, match="proposals 'best' is not one of"):
        draw_rejection(probs, u, 0.9, proposals="best")
    assert torch.equal(draw_rejection(probs, u, 1.0), draw(probs, u, 1.0))  # inverse CDF


@pytest.mark.parametrize("proposals", PROPOSALS)
@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_the_compiled_rounds_draw_valid_tokens(device, proposals):
    # What CUDA runs (inductor; ~20 s to build on a CPU): tokens in the nucleus, the same rows
    # rejected, and the eager tokens but for the last bits of the noise's log.
    probs = _mixed_rows(120, 600, seed=11).to(device)
    u = _uniforms(120, seed=12).to(device)
    tok, rejected = rejection_rounds(probs, u, 0.9, 2, compiled=True, proposals=proposals)
    eager_tok, eager_rejected = rejection_rounds(
        probs, u, 0.9, 2, compiled=False, proposals=proposals
    )
    kept = _nucleus_keep(probs, 0.9) > 0
    assert kept[~rejected].gather(-1, tok[~rejected][:, None]).all()
    assert (tok == eager_tok).float().mean() >= 0.95
    assert (rejected == eager_rejected).float().mean() >= 0.95
    alone = rejection_rounds(probs[7:8], u[7:8], 0.9, 2, compiled=True, proposals=proposals)
    assert torch.equal(alone[0], tok[7:8]) and torch.equal(alone[1], rejected[7:8])


@NO_CUDA
@pytest.mark.parametrize("proposals", PROPOSALS)
def test_the_cuda_rounds_do_not_wait_on_the_host(proposals):
    g = torch.Generator(device="cuda").manual_seed(0)
    probs = torch.softmax(0.3 * torch.randn(320, 151936, device="cuda", generator=g), -1)
    u = torch.rand(320, device="cuda", generator=g, dtype=torch.float64)
    rejection_rounds(probs, u, 0.9, proposals=proposals)  # built before the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tok, rejected = rejection_rounds(probs, u, 0.9, proposals=proposals)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    kept = _nucleus_keep(probs, 0.9) > 0
    assert kept[~rejected].gather(-1, tok[~rejected][:, None]).all()
    assert kept.gather(-1, draw_rejection(probs, u, 0.9, proposals=proposals)[:, None]).all()


# _Rows.step: rejection on CUDA only; a CPU draws what it drew before.

# Tokens, lengths and float64 log-probs of three `_Rows.step`s (8 rows, 600 tokens, T 0.7, top-p
# 0.9, EOS {414, 308}) from the code before the rejection draw (commit 0918c5d).
GOLDEN_TOKENS = [
    [119, 139, 105, 356, 159, 414, 309, 324],
    [268, 317, 308, 58, 460, 0, 153, 324],
    [391, 567, 0, 559, 159, 0, 153, 324],
]
GOLDEN_LENGTHS = [3, 3, 2, 3, 3, 1, 3, 3]
GOLDEN_LOGPROB = ["-0x1.3073418000000p+4", "-0x1.1c3a0a8000000p+4", "-0x1.aa03120000000p+3",
                  "-0x1.217f000000000p+4", "-0x1.d2c0470000000p+1", "-0x1.d5a4260000000p-1",
                  "-0x1.10525f0000000p+2", "-0x1.2204abc000000p-5"]  # fmt: skip


def _three_steps() -> tuple[list[list[int]], _Rows]:
    g = torch.Generator().manual_seed(7)
    # Flat rows (the full-vocabulary nucleus) and peaked ones (the top-256 path).
    logits = torch.cat(
        [0.3 * torch.randn(4, 600, generator=g), 6 * torch.randn(4, 600, generator=g)]
    )
    rows = _Rows(list(range(100, 108)), 3, [414, 308], 0, 0.7, 0.9, torch.device("cpu"))
    return [rows.step(logits * (1 + 0.1 * t), t).tolist() for t in range(3)], rows


def test_cpu_rows_draw_what_they_drew_before(monkeypatch):
    # (e) On a CPU, `_Rows.step` calls `draw` and never `draw_rejection`, and its tokens and
    # lengths are the old code's, bit for bit. Its log-probs agree to 1e-6 (float32 rounding):
    # their last bits are the CPU's (the golden predates a change of the project's CPU model; an
    # AMD EPYC with AVX2 rounds the log-softmax differently, by ~1 ulp).
    calls = []

    def spy(name, fn):
        return lambda *a, **k: calls.append(name) or fn(*a, **k)

    monkeypatch.setattr(lib.sampling, "draw", spy("draw", draw))
    monkeypatch.setattr(lib.sampling, "draw_rejection", spy("rejection", draw_rejection))
    tokens, rows = _three_steps()
    assert calls == ["draw"] * 3
    assert tokens == GOLDEN_TOKENS
    assert rows.lengths.tolist() == GOLDEN_LENGTHS
    assert rows.eos_hit.tolist() == [False, False, True, False, False, True, False, False]
    golden = torch.tensor([float.fromhex(h) for h in GOLDEN_LOGPROB], dtype=torch.float64)
    torch.testing.assert_close(rows.logprob.double(), golden, rtol=1e-6, atol=1e-6)


def test_rows_draw_by_rejection_on_cuda_only(monkeypatch):
    assert _by_rejection(torch.device("cuda", 0), 0.9)
    assert not _by_rejection(torch.device("cuda", 0), 1.0)  # top_p = 1: the inverse CDF
    assert not _by_rejection(torch.device("cpu"), 0.9)
    # The CUDA branch run on a CPU: rows draw through draw_rejection, tokens in their nucleus.
    calls = []
    monkeypatch.setattr(lib.sampling, "_by_rejection", lambda device, top_p: top_p < 1)
    monkeypatch.setattr(
        lib.sampling, "draw_rejection", lambda *a: calls.append(1) or draw_rejection(*a)
    )
    logits = 0.3 * torch.randn(8, 600, generator=torch.Generator().manual_seed(7))
    rows = _Rows(list(range(8)), 1, [-1], 0, 0.7, 0.9, torch.device("cpu"))
    tok = rows.step(logits, 0)
    assert calls == [1]
    assert torch.equal(
        tok, draw_rejection(torch.softmax(logits / 0.7, -1), rows.uniforms[:, 0], 0.9)
    )
    kept = _nucleus_keep(torch.softmax(logits / 0.7, -1), 0.9) > 0
    assert kept.gather(-1, tok[:, None]).all()
