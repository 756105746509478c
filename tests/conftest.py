"""Shared fixtures. Everything runs offline: a hub download in a test is a bug."""

from __future__ import annotations

import os

from lib.config import params_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """(model, tokenizer) of the tiny random Llama, loaded once per session. Do not mutate it."""
    from lib.models import load_model

    return load_model(params_for("model", base="tiny-random", device="cpu"))
