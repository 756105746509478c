"""StaticDecoder (lib/sampling.py): the fixed-shape path the GPU compiles into a CUDA graph must
sample what the dynamic-cache sampler samples. On CPU it runs uncompiled, which checks everything
but the graph capture: padding to the fixed width, positions, cache slots, masks, EOS handling."""

from __future__ import annotations

import pytest
import torch

from lib.config import params_for
from lib.models import load_model
from lib.sampling import StaticDecoder, sample

PROMPTS = [[1, 5, 9, 11, 4], [1, 7], [1, 7], [3, 8, 8]]


@pytest.fixture(scope="module")
def model():
    m, _ = load_model(params_for("model", base="tiny-random", device="cpu"))
    return m.eval()


@pytest.mark.parametrize(
    "temperature, top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)], ids=["greedy", "t1", "top_p"]
)
def test_static_decoder_samples_what_the_dynamic_sampler_samples(model, temperature, top_p):
    seeds = [11, 12, 13, 14]
    kw = dict(eos_token_ids=[2], pad_token_id=0, temperature=temperature, top_p=top_p)
    want = sample(model, PROMPTS, seeds, max_new_tokens=7, **kw)
    dec = StaticDecoder(model, rows=4, width=9, max_new_tokens=7, compile=False)
    got = dec.sample(PROMPTS, seeds, **kw)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    # The decoder is reused across calls (one compile per run): a second call starts clean.
    again = dec.sample(PROMPTS, seeds, **kw)
    assert [c.token_ids for c in again] == [c.token_ids for c in want]


def test_static_decoder_stops_rows_at_eos_like_the_dynamic_sampler(model):
    # Pick as "EOS" a token that greedy decoding of row 3 emits at step 2: some rows stop early,
    # others run to the length limit, and finished rows keep no token past their EOS.
    probe = sample(model, PROMPTS, [0] * 4, max_new_tokens=3, eos_token_ids=[0], pad_token_id=0,
                   temperature=0.0)  # fmt: skip
    eos = probe[3].token_ids[2]
    kw = dict(eos_token_ids=[eos], pad_token_id=0, temperature=0.0)
    want = sample(model, PROMPTS, [0] * 4, max_new_tokens=6, **kw)
    dec = StaticDecoder(model, rows=4, width=5, max_new_tokens=6, compile=False)
    got = dec.sample(PROMPTS, [0] * 4, **kw)
    assert [(c.token_ids, c.finish_reason) for c in got] == [
        (c.token_ids, c.finish_reason) for c in want
    ]
    assert got[3].finish_reason == "eos" and got[3].token_ids[-1] == eos
    assert all(eos not in c.token_ids[:-1] for c in got)


def test_static_decoder_refuses_other_shapes(model):
    dec = StaticDecoder(model, rows=4, width=3, max_new_tokens=2, compile=False)
    with pytest.raises(ValueError, match="built for 4 rows"):
        dec.sample(PROMPTS[:2], [1, 2], eos_token_ids=[2], pad_token_id=0)
    with pytest.raises(ValueError, match="longer than the width 3"):
        dec.sample(PROMPTS, [1, 2, 3, 4], eos_token_ids=[2], pad_token_id=0)
    assert torch.is_tensor(dec.mask)
