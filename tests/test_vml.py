"""lib.vml: MKL's VML kernels are resolved on one thread before any CPU model computes.

The race it prevents (pytorch#188792) cannot be triggered on demand: it needs a process's first
call of a VML function to run on two threads at once under CPU load (here 3 runs of ~250
gave the first training step a low-accuracy rotary `cos` on half the batch). What can fail here is
the prevention: a VML op left out of the warm-up, a warm-up that itself runs in parallel, or a
model load that no longer warms.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch

from lib import onednn, vml

# ATen's grain for the VML unary kernels (aten/src/ATen/native/cpu/UnaryOpsKernel.cpp,
# IMPLEMENT_FLOAT_KERNEL: `constexpr int64_t grain_size = 2048`): fewer elements run on the
# calling thread alone.
ATEN_VML_GRAIN = 2048


def _header_mkl_ops() -> set[str]:
    header = Path(torch.__file__).parent / "include" / "ATen" / "cpu" / "vml.h"
    if not header.exists():
        pytest.skip(f"this torch ships no {header}")
    live = [ln for ln in header.read_text().splitlines() if not ln.lstrip().startswith("//")]
    return set(re.findall(r"^IMPLEMENT_VML_MKL\((\w+),", "\n".join(live), re.M))


def test_warm_covers_every_op_the_installed_torch_sends_to_mkl_vml():
    routed = _header_mkl_ops()
    assert "cos" in routed and "sqrt" in routed  # the header was read
    assert routed <= set(vml.MKL_OPS), f"not warmed: {sorted(routed - set(vml.MKL_OPS))}"


@pytest.fixture
def recorded(monkeypatch):
    """Every MKL op's calls during the test: (op, dtype, elements, thread)."""
    calls = []
    for name in vml.MKL_OPS:
        real = getattr(torch, name)

        def rec(x, *a, _name=name, _real=real, **k):
            calls.append((_name, x.dtype, x.numel(), threading.get_ident()))
            return _real(x, *a, **k)

        monkeypatch.setattr(torch, name, rec)
    monkeypatch.setattr(vml, "_done", False)
    return calls


def test_model_load_path_warms_every_op_serially_once(recorded, monkeypatch):
    # onednn.enable() is what every CPU model and encoder load calls before computing.
    monkeypatch.setattr(torch.nn.functional, "linear", onednn._DENSE)  # enable() routes again
    onednn.enable()
    seen = {(name, dtype) for name, dtype, _, _ in recorded}
    assert seen == {(n, d) for n in vml.MKL_OPS for d in (torch.float32, torch.float64)}
    assert all(0 < n < ATEN_VML_GRAIN for _, _, n, _ in recorded)  # one call, this thread only
    assert {t for *_, t in recorded} == {threading.get_ident()}
    before = len(recorded)
    onednn.enable()
    assert len(recorded) == before  # once a process


def test_cpu_model_load_warms_vml(recorded, tiny_model):
    from lib.config import params_for
    from lib.models import load_model

    _, tok = tiny_model
    load_model(params_for("model", base="tiny-random", device="cpu"), tok)
    assert {name for name, *_ in recorded} == set(vml.MKL_OPS)
