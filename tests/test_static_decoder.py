"""StaticDecoder (lib/sampling.py): the fixed-shape path a GPU replays as a CUDA graph must sample
what the dynamic-cache sampler samples. On CPU it runs uncompiled ("eager"), which checks
everything but the capture: the shared prefill copied into the static cache, padding to the fixed
width, positions, cache slots, the 4D mask, the grouped-KV decode attention, EOS handling."""

from __future__ import annotations

import copy

import pytest
import torch

from lib.config import params_for
from lib.models import load_model
from lib.sampling import sample
from lib.static_decoder import StaticDecoder

PROMPTS = [[1, 5, 9, 11, 4], [1, 7], [1, 7], [3, 8, 8]]


@pytest.fixture(scope="module")
def model():
    m, _ = load_model(params_for("model", base="tiny-random", device="cpu"))
    return m.eval()


@pytest.fixture(scope="module")
def gqa_model():
    """A random Qwen3 with grouped KV heads (8 query heads over 2 KV heads), as Qwen3-8B has
    (32 over 8): the decode attention packs each KV head's 4 query heads; tiny-random has none."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        attn_implementation="sdpa",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = Qwen3ForCausalLM(cfg)
        for p in m.parameters():
            p.data.normal_(0, 0.3)  # peaked logits: greedy tokens that depend on the attention
    return m.eval()


@pytest.fixture(scope="module")
def qwen2_model():
    """A random Qwen2, the code domain's architecture (Qwen2.5-Coder-0.5B): grouped KV heads,
    biases on q/k/v (Llama and Qwen3 have none) and an untied LM head, as the coder's GGUF has."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False, attn_implementation="sdpa",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        m = Qwen2ForCausalLM(cfg)
        for p in m.parameters():
            p.data.normal_(0, 0.3)  # non-zero biases too: a decoder that dropped them would differ
    assert m.model.layers[0].self_attn.q_proj.bias is not None
    return m.eval()


@pytest.mark.parametrize(
    "temperature, top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)], ids=["greedy", "t1", "top_p"]
)
@pytest.mark.parametrize("which", ["tiny_random", "gqa", "qwen2"])
@pytest.mark.parametrize("prefill", ["dynamic", "static"])
def test_static_decoder_samples_what_the_dynamic_sampler_samples(
    model, gqa_model, qwen2_model, which, temperature, top_p, prefill, monkeypatch
):
    # Width 9 > the longest prompt (7): the prompt KV rows sit right-aligned in the static cache.
    # The decoder is reused across calls (one graph per shape): each call starts clean.
    # prefill="static" (the GPU default): the distinct prompts packed into rows of 9 slots
    # (lib.prefill, first-fit decreasing: lengths 5 + 3 | 2 for PROMPTS, 7 + 2 | 4 + 1 for `other`),
    # each attending only to itself, their K/V gathered into the decoder's cache; one set of
    # buffers per packing shape (distinct prompts, rows, prompts a row, row length).
    monkeypatch.setattr("lib.prefill.PACK_ROW", 9)
    m = {"tiny_random": model, "gqa": gqa_model, "qwen2": qwen2_model}[which]
    seeds = [11, 12, 13, 14]
    kw = dict(eos_token_ids=[2], pad_token_id=0, temperature=temperature, top_p=top_p)
    other = [[4, 4, 4, 4, 4, 4, 4], [1], [9, 3], [2, 6, 5, 7]]
    dec = StaticDecoder(m, rows=4, width=9, max_new_tokens=7, mode="eager", prefill=prefill)
    for prompts in (PROMPTS, PROMPTS, other, PROMPTS):
        want = sample(m, prompts, seeds, max_new_tokens=7, **kw)
        got = dec.sample(prompts, seeds, **kw)
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
        for a, b in zip(got, want, strict=True):
            assert abs(a.logprob - b.logprob) <= 1e-4 * max(1.0, abs(b.logprob))
    assert sorted(dec._prefills) == ([(3, 2, 2, 9), (4, 2, 2, 9)] if prefill == "static" else [])
    # The model's own attention is back after the step (the decode attention is step-local).
    assert m.config._attn_implementation == "sdpa"


def test_gqa_decode_attention_is_the_repeated_kv_attention(gqa_model):
    # Against the definition: each query head h attends over KV head h // G (repeat_interleave).
    from lib.static_decoder import _gqa_decode_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, h, n, 16, generator=g) for h, n in ((8, 1), (2, 6), (2, 6)))
    mask = torch.rand(3, 1, 1, 6, generator=g) > 0.3
    mask[:, :, :, 0] = True
    out, _ = _gqa_decode_attention(gqa_model.model.layers[0].self_attn, q, k, v, mask, scaling=0.25)
    kr, vr = k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1)  # (3, 8, 6, 16)
    scores = (q @ kr.transpose(-1, -2)) * 0.25  # (3, 8, 1, 6)
    ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ vr  # (3, 8, 1, 16)
    torch.testing.assert_close(out, ref.transpose(1, 2))


def test_static_decoder_stops_rows_at_eos_like_the_dynamic_sampler(model):
    # Pick as "EOS" a token that greedy decoding of row 3 emits at step 2: some rows stop early,
    # others run to the length limit, and finished rows keep no token past their EOS.
    probe = sample(model, PROMPTS, [0] * 4, max_new_tokens=3, eos_token_ids=[0], pad_token_id=0,
                   temperature=0.0)  # fmt: skip
    eos = probe[3].token_ids[2]
    kw = dict(eos_token_ids=[eos], pad_token_id=0, temperature=0.0)
    want = sample(model, PROMPTS, [0] * 4, max_new_tokens=6, **kw)
    dec = StaticDecoder(model, rows=4, width=5, max_new_tokens=6, mode="eager")
    got = dec.sample(PROMPTS, [0] * 4, **kw)
    assert [(c.token_ids, c.finish_reason) for c in got] == [
        (c.token_ids, c.finish_reason) for c in want
    ]
    assert got[3].finish_reason == "eos" and got[3].token_ids[-1] == eos
    assert all(eos not in c.token_ids[:-1] for c in got)


def test_static_decoder_stops_decoding_once_every_row_has_ended(model, monkeypatch):
    # Every token ends a sample: all rows end at step 0, so no decode step may run at all.
    dec = StaticDecoder(model, rows=4, width=5, max_new_tokens=6, mode="eager")
    steps = []
    monkeypatch.setattr(dec, "step", lambda: steps.append(1) or dec._step())
    got = dec.sample(PROMPTS, [0] * 4, eos_token_ids=range(model.config.vocab_size),
                     pad_token_id=0, temperature=1.0)  # fmt: skip
    assert steps == [] and all(len(c.token_ids) == 1 for c in got)


def test_static_decoder_refuses_other_shapes(model):
    dec = StaticDecoder(model, rows=4, width=3, max_new_tokens=2, mode="eager")
    with pytest.raises(ValueError, match="built for 4 rows"):
        dec.sample(PROMPTS[:2], [1, 2], eos_token_ids=[2], pad_token_id=0)
    with pytest.raises(ValueError, match="longer than the width 3"):
        dec.sample(PROMPTS, [1, 2, 3, 4], eos_token_ids=[2], pad_token_id=0)
    with pytest.raises(ValueError, match="mode 'graph' needs a CUDA model"):
        StaticDecoder(model, rows=4, width=3, max_new_tokens=2, mode="graph")


def test_static_decoder_checks_for_the_end_every_k_steps(model, monkeypatch):
    # Every row emits an EOS at step 2 (EOS = the tokens the rows draw at step 2, T 1): the decoder
    # only looks at t = 0, k, 2k, ..., so it decodes k steps (2 needed, then padding until t = k)
    # and returns exactly what `sample` returns.
    from lib.static_decoder import _DONE_CHECK_EVERY

    seeds = [0, 1, 2, 3]
    probe = sample(model, PROMPTS, seeds, max_new_tokens=3, eos_token_ids=[-1], pad_token_id=0)
    kw = dict(eos_token_ids=[c.token_ids[2] for c in probe], pad_token_id=0, temperature=1.0)
    new = 2 * _DONE_CHECK_EVERY + 3
    want = sample(model, PROMPTS, seeds, max_new_tokens=new, **kw)
    assert [(len(c.token_ids), c.finish_reason) for c in want] == [(3, "eos")] * 4
    dec = StaticDecoder(model, rows=4, width=5, max_new_tokens=new, mode="eager")
    steps = []
    monkeypatch.setattr(dec, "step", lambda: steps.append(1) or dec._step())
    got = dec.sample(PROMPTS, seeds, **kw)
    assert len(steps) == _DONE_CHECK_EVERY
    assert [(c.token_ids, c.finish_reason) for c in got] == [
        (c.token_ids, c.finish_reason) for c in want
    ]
    for a, b in zip(got, want, strict=True):  # the padding steps add nothing to a row's log-prob
        assert abs(a.logprob - b.logprob) <= 1e-4 * max(1.0, abs(b.logprob))


@pytest.mark.parametrize("proposals", ["ranked", "independent"])
def test_static_decoder_samples_what_sample_samples_drawing_by_rejection(
    gqa_model, monkeypatch, proposals
):
    # The CUDA draw (`draw_rejection`) forced on a CPU: both decoders go through it, alike; with
    # ranked proposals (the default) they draw `draw`'s tokens, with independent ones others.
    import lib.sampling
    from lib.draw import draw_rejection

    kw = dict(eos_token_ids=[2], pad_token_id=0, temperature=0.7, top_p=0.9)
    seeds = [31, 32, 33, 34]
    old = sample(gqa_model, PROMPTS, seeds, max_new_tokens=7, **kw)
    monkeypatch.setattr(lib.sampling, "_by_rejection", lambda device, top_p: top_p < 1)
    monkeypatch.setattr(
        lib.sampling, "draw_rejection", lambda *a: draw_rejection(*a, proposals=proposals)
    )
    want = sample(gqa_model, PROMPTS, seeds, max_new_tokens=7, **kw)
    dec = StaticDecoder(gqa_model, rows=4, width=9, max_new_tokens=7, mode="eager")
    got = dec.sample(PROMPTS, seeds, **kw)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    same = [c.token_ids for c in old] == [c.token_ids for c in want]
    assert same == (proposals == "ranked")


@pytest.mark.parametrize("decoder", ["sample", "static"])
def test_completion_logprob_is_the_teacher_forced_logprob_of_its_tokens(gqa_model, decoder):
    # Completion.logprob = Σ_t log softmax(logits_t)[y_t] at T = 1 without top-p (the log π(y|x)
    # training scores), EOS included, padding after EOS excluded. Reference: one unpadded forward
    # of prompt + tokens per row, from the float64 copy of the model.
    seeds = [21, 22, 23, 24]
    kw = dict(eos_token_ids=[2], pad_token_id=0, temperature=0.7, top_p=0.9)
    m = gqa_model
    # EOS = tokens rows 0 and 3 draw early (the draws do not depend on EOS): rows end at
    # different steps and then decode padding, which must not count.
    probe = sample(m, PROMPTS, seeds, max_new_tokens=7, **kw)
    kw["eos_token_ids"] = [probe[0].token_ids[2], probe[3].token_ids[1]]
    if decoder == "sample":
        got = sample(m, PROMPTS, seeds, max_new_tokens=7, **kw)
    else:
        got = StaticDecoder(m, rows=4, width=9, max_new_tokens=7, mode="eager").sample(
            PROMPTS, seeds, **kw
        )
    assert any(c.finish_reason == "eos" and len(c.token_ids) < 7 for c in got)
    ref64 = copy.deepcopy(m).double()
    for prompt, c in zip(PROMPTS, got, strict=True):
        assert len(c.token_ids) >= 1
        ids = torch.tensor([prompt + c.token_ids])
        with torch.no_grad():
            lp = ref64(input_ids=ids).logits[0].log_softmax(-1)  # (P + T, V)
        want = sum(float(lp[len(prompt) - 1 + t, y]) for t, y in enumerate(c.token_ids))
        assert c.logprob < 0
        assert abs(c.logprob - want) <= 1e-4 * max(1.0, abs(want))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (0.7, 0.9)], ids=["greedy", "top_p"])
def test_graphed_decoder_replays_what_it_ran_eagerly(gqa_model, temperature, top_p, monkeypatch):
    # The same decoder eagerly and as CUDA graphs, three calls: the packed prefill runs eagerly
    # (1st), is captured (2nd) and replays (3rd); the decode step is captured in the 1st. Same
    # kernels, so the same tokens.
    monkeypatch.setattr("lib.prefill.PACK_ROW", 9)
    m = copy.deepcopy(gqa_model).cuda()
    kw = dict(eos_token_ids=[2], pad_token_id=0, temperature=temperature, top_p=top_p)
    eager = StaticDecoder(m, rows=4, width=9, max_new_tokens=7, mode="eager", prefill="static")
    graph = StaticDecoder(m, rows=4, width=9, max_new_tokens=7, mode="graph")
    seeds = [11, 12, 13, 14]
    for _ in range(3):
        want = eager.sample(PROMPTS, seeds, **kw)
        got = graph.sample(PROMPTS, seeds, **kw)
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        for a, b in zip(got, want, strict=True):
            assert abs(a.logprob - b.logprob) <= 1e-5 * max(1.0, abs(b.logprob))
    assert graph._graph is not None
    assert [(p.uses, p.graph is not None) for p in graph._prefills.values()] == [(3, True)]


def test_packed_prefill_without_logits_to_keep_samples_the_same(gqa_model, monkeypatch):
    # Models whose forward takes no `logits_to_keep` return every position's logits: the prefill
    # then picks the same last-token rows itself (2 packed rows of 9, as above).
    monkeypatch.setattr("lib.prefill.PACK_ROW", 9)
    monkeypatch.setattr("lib.prefill._logits_kwarg", lambda model: None)
    kw = dict(eos_token_ids=[2], pad_token_id=0, temperature=0.0)
    dec = StaticDecoder(
        gqa_model, rows=4, width=9, max_new_tokens=5, mode="eager", prefill="static"
    )
    assert not next(iter(dec._prefills.values()), None) and dec.prefill == "static"
    got = dec.sample(PROMPTS, [0] * 4, **kw)
    want = sample(gqa_model, PROMPTS, [0] * 4, max_new_tokens=5, **kw)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [p.by_tensor for p in dec._prefills.values()] == [False]
