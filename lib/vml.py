"""Resolve MKL VML's kernels on one thread, before any op runs them on several (pytorch#188792).

On the CPU, ATen sends contiguous float32/float64 unary ops (cos, sin, exp, log, sqrt, tanh, erf,
...) to MKL's VML, one call per intra-op worker thread on its chunk. oneMKL 2024.2, the MKL inside
torch's CPU wheels, picks each VML function's kernel lazily, on that function's first call; when
the first call runs on two threads at once, one of them can run a low-accuracy kernel on its whole
chunk, that once. Here it hit the rotary embedding's `cos`, the first VML call of a training
process: under CPU load, 3 runs of ~250 computed half the batch's cos with errors up to 1.5e-4,
so the run trained another adapter (tests/test_reliability_kill.py's resume test failed on it).
Calling each function once on a few elements, below ATen's grain of 2,048 (so on the calling
thread alone), resolves them all before any parallel call. The results of a resolved function are
unchanged; the warm-up takes well under a millisecond.
"""

from __future__ import annotations

import torch

# ATen's MKL-routed unary ops (`IMPLEMENT_VML_MKL` in torch/include/ATen/cpu/vml.h; a test reads
# the installed header so a torch upgrade that routes another op fails it).
MKL_OPS = (
    "acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2",
    "sin", "sqrt", "tan", "tanh", "trunc",
)  # fmt: skip
_SERIAL = 64  # elements: below the grain, so one call on the calling thread
_done = False


def warm() -> bool:
    """Call every MKL VML function once, float32 and float64, on this thread; once a process
    (`lib.onednn.enable`, before every CPU model or encoder computes). True if it ran now."""
    global _done
    if _done:
        return False
    for dtype in (torch.float32, torch.float64):
        x = torch.full((_SERIAL,), 0.5, dtype=dtype)  # in every function's domain (erfinv, acos)
        for name in MKL_OPS:
            getattr(torch, name)(x)
    _done = True
    return True
