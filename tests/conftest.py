"""Shared fixtures. Everything runs offline: a hub download in a test is a bug."""

from __future__ import annotations

import os

from lib.config import params_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from lib import onednn  # noqa: E402

# Every stage process routes CPU float32 linear layers through oneDNN once it loads a model
# (lib/onednn.py); the tests do so from the start, so no result depends on which test ran first.
onednn.enable()


@pytest.fixture(scope="session")
def tiny_model():
    """(model, tokenizer) of the tiny random Llama, loaded once per session. Do not mutate it."""
    from lib.models import load_model

    return load_model(params_for("model", base="tiny-random", device="cpu"))


@pytest.fixture(scope="session")
def smoke_repro(tmp_path_factory):
    """(root, output) of `dvc repro` on the smoke configuration in a scratch repo, run once per
    session. Never mutate it: take `tests.pipeline_util.reproduced_copy` of it."""
    from tests.pipeline_util import dvc, scratch_repo

    root = scratch_repo(tmp_path_factory.mktemp("smoke"))
    return root, dvc(["repro"], root)
