"""lib.decode_kernels: the CUDA decode step's attention and RMSNorm, checked on CPU against
independent references (sdpa over repeated KV heads; transformers' own RMSNorm modules)."""

from __future__ import annotations

import pytest
import torch

from lib.decode_kernels import fused_rms_norms, matmul_decode_attention


def _case(b=5, hq=8, hkv=2, length=11, d=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, hq, 1, d, generator=g, dtype=dtype)
    k = torch.randn(b, hkv, length, d, generator=g, dtype=dtype)
    v = torch.randn(b, hkv, length, d, generator=g, dtype=dtype)
    mask = torch.rand(b, 1, 1, length, generator=g) < 0.6
    mask[:, 0, 0, -1] = True  # the new token's own slot is always open (as StaticDecoder sets it)
    return q, k, v, mask


@pytest.mark.parametrize("hkv", [2, 8], ids=["grouped", "one_per_head"])
def test_matmul_attention_equals_sdpa_over_repeated_kv_heads(hkv):
    # Reference: query head h reads KV head h // G (transformers' repeat_kv pairing), each head
    # through torch's sdpa with the same boolean mask. Catches a wrong grouping (h % Hkv), a
    # scale applied twice or not at all, and the mask's polarity.
    q, k, v, mask = _case(hkv=hkv)
    hq, d = q.shape[1], q.shape[-1]
    g = hq // hkv
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1), attn_mask=mask
    )  # (B, Hq, 1, D)
    out = matmul_decode_attention(q, k, v, mask, d**-0.5)  # (B, Hkv, G, D)
    got = out.reshape(q.shape[0], hq, 1, d)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)


def test_matmul_attention_ignores_masked_slots():
    # A masked slot's key and value (the static cache's unwritten slots) never reach the output.
    q, k, v, mask = _case()
    out = matmul_decode_attention(q, k, v, mask, 0.25)
    k2, v2 = k.clone(), v.clone()
    k2[~mask[:, 0, 0].unsqueeze(1).expand(-1, 2, -1)] = 1e3
    v2[~mask[:, 0, 0].unsqueeze(1).expand(-1, 2, -1)] = -1e3
    torch.testing.assert_close(matmul_decode_attention(q, k2, v2, mask, 0.25), out)


def _qwen3(dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    m = Qwen3ForCausalLM(cfg).to(dtype).eval()
    for n, p in m.named_parameters():
        if n.endswith("norm.weight"):
            p.data.uniform_(0.5, 1.5)  # not all ones: the weight must be applied
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norms_compute_transformers_rmsnorm(dtype):
    # Every RMSNorm of a Qwen3 (per layer: input, post-attention, q_norm, k_norm; plus the final
    # one) gives its own module's output: float32 to rounding, bf16 to one bf16 step. Catches
    # a dropped weight, eps inside the square root's wrong side, statistics in the input dtype.
    m = _qwen3(dtype)
    norms = [x for x in m.modules() if type(x).__name__ == "Qwen3RMSNorm"]
    x = torch.randn(3, 5, 64).to(dtype) * 3
    heads = torch.randn(3, 5, 8, 16).to(dtype)
    want = [n(heads if n.weight.shape[0] == 16 else x) for n in norms]
    with fused_rms_norms(m) as swapped:
        got = [n(heads if n.weight.shape[0] == 16 else x) for n in norms]
    assert swapped == len(norms) == 2 * 4 + 1
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 8e-3, "atol": 8e-3}
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, **tol)


def test_fused_rms_norms_give_the_modules_back_even_on_error():
    m = _qwen3(torch.float32)
    with pytest.raises(RuntimeError, match="boom"), fused_rms_norms(m):
        assert all("forward" in x.__dict__ for x in m.modules() if "RMSNorm" in type(x).__name__)
        raise RuntimeError("boom")
    assert not any("forward" in x.__dict__ for x in m.modules())


def test_fused_rms_norms_leave_other_norms_alone():
    # Gemma's RMSNorm scales by (1 + weight): swapping it would change the model.
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    m = torch.nn.Sequential(GemmaRMSNorm(8))
    with fused_rms_norms(m) as swapped:
        assert swapped == 0
        assert "forward" not in m[0].__dict__


def test_the_cpu_decoder_never_uses_the_cuda_kernels(monkeypatch, tiny_model):
    # StaticDecoder on CPU must run transformers' modules (its samples equal `sample`'s exactly:
    # tests/test_static_decoder.py); the CUDA kernels are for the GPU step alone.
    import lib.static_decoder as sd

    def boom(*_a, **_k):
        raise AssertionError("a CUDA decode kernel ran on CPU")

    monkeypatch.setattr(sd, "fused_rms_norms", boom)
    monkeypatch.setattr(sd, "matmul_decode_attention", boom)
    model, tok = tiny_model
    dec = sd.StaticDecoder(model, rows=2, width=6, max_new_tokens=3, mode="eager")
    out = dec.sample([[1, 2, 3], [4, 5]], [0, 1], eos_token_ids=[-1], pad_token_id=0)
    assert [len(c.token_ids) for c in out] == [3, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_greedy_tokens_with_and_without_the_cuda_kernels(monkeypatch):
    # float32 on the GPU: the kernels change rounding only, so greedy tokens of a peaked model
    # agree with transformers' modules.
    import lib.static_decoder as sd

    m = _qwen3(torch.float32).cuda()
    for p in m.parameters():
        p.data.normal_(0, 0.3)
    m.config._attn_implementation = "sdpa"
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    outs = []
    for on in (True, False):
        monkeypatch.setattr(sd, "CUDA_DECODE_KERNELS", on)
        dec = sd.StaticDecoder(m, rows=3, width=6, max_new_tokens=6, mode="graph")
        comps = dec.sample(prompts, [0, 1, 2], eos_token_ids=[-1], pad_token_id=0, temperature=0.0)
        outs.append([c.token_ids for c in comps])
    assert outs[0] == outs[1]


def test_fused_rms_norm_rounds_bf16_once():
    # In bf16 (unit roundoff u = 2^-8) the fused norm applies the weight before its one rounding,
    # so every element is within u of the exact value (float64 reference); transformers rounds
    # before and after the weight, and ~10% of these elements land outside u. Catches the
    # upcast-normalise-downcast-then-weight form coming back.
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    torch.manual_seed(0)
    norm = Qwen3RMSNorm(4096, eps=1e-6).to(torch.bfloat16)
    norm.weight.data.uniform_(0.5, 1.5)
    x = (torch.randn(64, 4096) * 3).bfloat16()
    x64, w64 = x.double(), norm.weight.double()
    exact = w64 * x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6)
    bound = 2**-8 * exact.abs() * 1.001 + 1e-6
    with fused_rms_norms(torch.nn.Sequential(norm)):
        fused = norm(x).double()
    assert bool(((fused - exact).abs() <= bound).all())
    unfused = norm(x).double()  # transformers' own forward again
    assert float(((unfused - exact).abs() > bound).float().mean()) > 0.05
