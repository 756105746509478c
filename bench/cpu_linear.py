"""CPU float32 linear layers: MKL's sgemm (PyTorch's default) against oneDNN (lib/onednn.py).

    python bench/cpu_linear.py                 # SmolLM2-135M and mpnet shapes, torch's threads
    python bench/cpu_linear.py --threads 1

Forward (x·Wᵀ) and the input gradient (g·W) at the shapes the default pipeline runs: a packed
training batch (552 tokens), a 32-row decode step, the LM head over the reference tokens, and an
mpnet batch. The two kernels alternate on the same tensors in one process, best of --repeats,
and the table prints GFLOP/s side by side with their ratio (no timed assertion).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lib import onednn  # noqa: E402

SHAPES = [  # (what, rows M, in K, out N)
    ("SmolLM2 MLP up, packed batch", 552, 576, 1536),
    ("SmolLM2 MLP down, packed batch", 552, 1536, 576),
    ("SmolLM2 q_proj, decode 32 rows", 32, 576, 576),
    ("SmolLM2 LM head, 160 targets", 160, 576, 49152),
    ("mpnet FFN, 64×40 tokens", 2560, 768, 3072),
]


def _best(fn, repeats: int, inner: int) -> float:
    for _ in range(2):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inner", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not onednn.available():
        sys.exit("this torch build has no oneDNN linear kernel")
    g = torch.Generator().manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; GFLOP/s, best of {args.repeats}"
    )
    print("| shape | pass | MKL | oneDNN | oneDNN / MKL |")
    print("|---|---|---|---|---|")
    for what, m, k, n in SHAPES:
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
        up = torch.randn(m, n, generator=g)
        passes = [
            ("forward", lambda x=x, w=w: onednn._DENSE(x, w), lambda x=x, w=w: onednn.linear(x, w)),
            (
                "∂/∂x",
                lambda up=up, w=w: up @ w,
                lambda up=up, w=w: onednn._mm(up, onednn._transposed(w), None),
            ),
        ]
        for name, mkl, dnn in passes:
            a, b = _best(mkl, args.repeats, args.inner), _best(dnn, args.repeats, args.inner)
            flop = 2 * m * k * n
            print(
                f"| {what} | {name} | {flop / a / 1e9:.0f} | {flop / b / 1e9:.0f} | {a / b:.2f}× |"
            )
    assert F.linear is not onednn.linear  # the bench calls both kernels explicitly


if __name__ == "__main__":
    main()
