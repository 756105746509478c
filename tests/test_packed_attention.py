"""The packed training pass's attention on CUDA (lib/train/packed_lm.attention_backends): sdpa
without cuDNN's kernel, whose per-shape execution plans cost ~1.3 ms of host time a call and
seconds at every new shape of the packed rows (bench/README.md, "Run on two H200s")."""

from __future__ import annotations

import pytest
import torch

from lib.train.packed_lm import PackedLM


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_packed_pass_attends_without_cudnn():
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to("cuda", torch.bfloat16)
    lm = PackedLM(get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])))
    rows, width = 2, 96
    ids = torch.randint(0, 512, (rows, width), device="cuda")
    # Two sequences of 48 packed in each row: block-diagonal causal, additive (lib.packing's
    # form), which no flash kernel takes.
    half = torch.ones(width // 2, width // 2, dtype=torch.bool, device="cuda").tril()
    allowed = torch.block_diag(half, half)
    mask = torch.zeros(rows, 1, width, width, dtype=torch.bfloat16, device="cuda")
    mask.masked_fill_(~allowed, torch.finfo(torch.bfloat16).min)
    pos = torch.arange(width // 2, device="cuda").repeat(rows, 2)
    keep = torch.arange(rows * width, device="cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        lm(ids, mask, pos, keep).float().square().mean().backward()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()}
    attention = sorted(n for n in names if n.startswith("aten::") and "attention" in n)
    assert attention and not [n for n in attention if "cudnn" in n], attention


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_chunked_target_logprobs_match_and_never_hold_the_whole_logits():
    # 4,096 kept rows × a 32,768-token vocabulary: the whole pass holds 4096·32768·4 B = 512 MiB of
    # float32 logits at least (plus the log-softmax and its gradient: ~1.5 GiB);
    # 256-row chunks hold 1/16 of that at a time. Same log-probs and gradient either way.
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=32768, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    # float32 (TF32 off by default for matmuls): the two paths agree to rounding, so a chunk that
    # took the wrong rows or targets shows as an O(1) difference, not as bf16 noise.
    model = Qwen2ForCausalLM(cfg).to("cuda", torch.float32)
    lm = PackedLM(get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])))
    rows, width = 8, 512
    ids = torch.randint(0, cfg.vocab_size, (rows, width), device="cuda")
    causal = torch.ones(width, width, dtype=torch.bool, device="cuda").tril()
    mask = torch.zeros(rows, 1, width, width, dtype=torch.float32, device="cuda")
    mask.masked_fill_(~causal, torch.finfo(torch.float32).min)
    pos = torch.arange(width, device="cuda").repeat(rows, 1)
    keep = torch.arange(rows * width, device="cuda")
    targets = torch.randint(0, cfg.vocab_size, (rows * width,), device="cuda")
    lora = [p for n, p in lm.named_parameters() if "lora_" in n]
    got = {}
    for chunk in (0, 256):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        tok = lm(ids, mask, pos, keep, targets=targets, chunk=chunk)
        grads = torch.autograd.grad(tok.mean(), lora)
        torch.cuda.synchronize()
        got[chunk] = (tok.detach(), grads, torch.cuda.max_memory_allocated() - base)
    (whole, g0, peak0), (chunked, g1, peak1) = got[0], got[256]
    assert torch.allclose(whole, chunked, atol=1e-4, rtol=0)
    for a, b in zip(g0, g1, strict=True):
        assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()), rtol=0)
    assert peak0 > 512 * 2**20 and 4 * peak1 < peak0, (peak0 / 2**20, peak1 / 2**20)
