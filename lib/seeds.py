"""Stable seeds: one hash for every seed derived from the run's `seed` and a key.

`rng_seed(seed, *key)` is a 63-bit integer that depends only on the seed and the key's parts (their
`str`, joined with a separator that no part contains in practice), never on Python's per-process
hash randomisation, the platform or the call order. `rng(seed, *key)` is a NumPy generator and
`torch_generator(seed, *key)` a CPU torch generator seeded from it. Use a short literal as the
first key part to name the stream (e.g. "train-sample"), so two uses never share a seed by accident.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

_SEP = "\x1f"  # ASCII unit separator: ("a", "bc") and ("ab", "c") hash differently


def rng_seed(seed: int, *key: object) -> int:
    """A 63-bit seed from (seed, *key): SHA-256 of their strings, first 8 bytes, little-endian."""
    text = _SEP.join(str(p) for p in (seed, *key))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def rng(seed: int, *key: object) -> np.random.Generator:
    return np.random.default_rng(rng_seed(seed, *key))


def torch_generator(seed: int, *key: object) -> torch.Generator:
    return torch.Generator().manual_seed(rng_seed(seed, *key))
