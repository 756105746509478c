"""Base-model resolution, offline. A network connection attempt anywhere here fails the test."""

import subprocess
import sys
import textwrap
import time

import pytest
import torch

from lib.config import params_for
from lib.models import ModelError, load_model, model_source, resolve_dtype

_NO_NETWORK = textwrap.dedent(
    """
    import os, socket
    os.environ["HF_HUB_OFFLINE"] = "1"
    def _refuse(*a, **k):
        raise RuntimeError("network access attempted")
    socket.socket.connect = _refuse
    socket.create_connection = _refuse
    """
)


def _run_offline(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_tiny_random_loads_offline_and_is_deterministic():
    out = _run_offline(
        """
        from lib.config import params_for
        from lib.models import load_model
        m, tok = load_model(params_for("model", base="tiny-random", device="cpu"))
        n = sum(p.numel() for p in m.parameters())
        print(n, round(float(next(m.parameters()).sum()), 6), tok.eos_token)
        """
    )
    n, checksum, eos = out.split()
    assert 2_000_000 < int(n) < 4_000_000
    m, _ = load_model(params_for("model", base="tiny-random"))
    assert round(float(next(m.parameters()).sum()), 6) == float(checksum)
    assert eos == "<|im_end|>"


def test_smollm2_resolves_offline_from_the_package():
    """Converts the packaged GGUF once (~25 s, then cached) and generates with the chat template."""
    out = _run_offline(
        """
        from lib.config import params_for
        from lib.models import load_model, smollm2_dir
        m, tok = load_model(params_for("model", base="smollm2-135m-instruct", device="cpu"))
        assert (smollm2_dir() / "model.safetensors").exists()
        ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                      add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = m.generate(**ids, max_new_tokens=12, do_sample=False)
        print(sum(p.numel() for p in m.parameters()))
        print(tok.decode(out[0, ids["input_ids"].shape[1]:]))
        """
    )
    n, text = out.strip().split("\n", 1)
    assert int(n) == 134_515_008
    assert "Paris" in text  # real weights, not random ones


def test_hub_id_offline_fails_in_seconds_naming_model_base():
    # Was: 48 s of silent retries, then a 79-line transformers traceback without `model.base`.
    t0 = time.monotonic()
    with pytest.raises(
        ModelError, match=r"model.base = 'Qwen/Qwen3-8B'.*needs network once.*local path"
    ):
        load_model(params_for("model", base="Qwen/Qwen3-8B", device="cpu"))
    assert time.monotonic() - t0 < 5


def test_hub_id_with_the_hub_unreachable_fails_without_the_offline_flag(monkeypatch):
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def unreachable(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ModelError, match=r"model.base = 'nobody/not-a-model'.*cannot be reached"):
        model_source("nobody/not-a-model")


@pytest.mark.parametrize("typo", ["smollm2-135m", "SmolLM2-135M-instruct", "smollm-135m-instruct"])
def test_typo_of_the_embedded_model_suggests_it(typo):
    with pytest.raises(
        ModelError, match=rf"model.base = '{typo}'.*did you mean 'smollm2-135m-instruct'"
    ):
        model_source(typo)


def test_missing_local_path_says_it_does_not_exist(tmp_path):
    missing = tmp_path / "my-model"
    with pytest.raises(ModelError, match=rf"local path {missing} does not exist"):
        load_model(params_for("model", base=str(missing), device="cpu"))


def test_existing_local_folder_is_used_as_is(tmp_path):
    assert model_source(str(tmp_path)) == str(tmp_path)


def test_4bit_on_cpu_is_really_quantised():
    import bitsandbytes as bnb

    m, _ = load_model(params_for("model", base="tiny-random", load_in_4bit=True, device="cpu"))
    assert isinstance(m.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert m(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, m.config.vocab_size)


def test_dtype_resolution():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="^model.device is 'cuda' but CUDA is not available"):
        load_model(params_for("model", base="tiny-random", device="cuda"))


def test_score_device_without_cuda_names_its_own_key():
    import pandas as pd

    from lib.scoring import score_generations

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = params_for("score", device="cuda:1")
    with pytest.raises(RuntimeError, match="^score.device is 'cuda:1' but CUDA is not available"):
        score_generations(pd.DataFrame(), pd.DataFrame(), p, "baseline")
