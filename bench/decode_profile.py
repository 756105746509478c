"""Where one decode step's GPU time goes (issue 20): the kernels of a `StaticDecoder` step at the
generate bench's load, from torch.profiler on the eager step (a graph replay runs the same
kernels), grouped into matmuls, attention, and the rest.

    python -m bench.decode_profile --rows 320            # Qwen3-8B shapes, random bf16 weights

Prints the top kernels by GPU time, the per-step totals by group, the kernel count, and the graph
replay's time (CUDA events) for comparison. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch

from bench.draw import median_ms
from bench.generate import _run_batches, qwen3_8b_random, random_prompts
from lib.generate import BatchSampler

GROUPS = (
    ("matmul", re.compile(r"gemm|nvjet|cutlass|sm90_xmma|cublas|splitK", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|efficient|softmax", re.I)),
    ("copy/cat/index", re.compile(r"copy|cat|index|gather|scatter|fill", re.I)),
)


def group_of(name: str) -> str:
    return next((g for g, pat in GROUPS if pat.search(name)), "elementwise/other")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=320)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="profiled eager steps")
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    model = qwen3_8b_random(device)
    prompts = random_prompts(args.prompts, 150000)
    load = argparse.Namespace(  # bench.generate's load: every prompt's samples in one batch
        samples=args.rows // args.prompts,
        max_new_tokens=args.new,
        batch_size=args.rows,
        temperature=0.7,
        top_p=0.9,
    )
    sampler = BatchSampler(model, "auto")
    _run_batches(sampler, prompts, load, 151643, temperature=0.0)  # builds the decoder
    dec = sampler._decoder
    replay = median_ms(dec._run, device, 10)
    dec._step()  # warm
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.steps):
            dec._step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, list[float]] = defaultdict(list)
    for e in kernels:
        by_name[e.name].append(e.device_time_total / 1000.0)  # us -> ms
    per_step = {k: sum(v) / args.steps for k, v in by_name.items()}
    groups: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for k, ms in per_step.items():
        groups[group_of(k)] += ms
        counts[group_of(k)] += len(by_name[k]) // args.steps
    total = sum(per_step.values())
    print(f"rows {dec.rows}, cache length {dec.length}; graph replay {replay:.2f} ms a step")
    print(f"eager step: {len(kernels) // args.steps} kernels, {total:.2f} ms of kernel time")
    print("| group | ms a step | kernels a step | share |")
    print("|---|---|---|---|")
    for g, ms in sorted(groups.items(), key=lambda x: -x[1]):
        print(f"| {g} | {ms:.2f} | {counts[g]} | {ms / total:.0%} |")
    print("\n| kernel (top 20 by time) | ms a step | calls a step | mean us |")
    print("|---|---|---|---|")
    for k, ms in sorted(per_step.items(), key=lambda x: -x[1])[:20]:
        n = len(by_name[k]) // args.steps
        print(f"| {k[:90]} | {ms:.3f} | {n} | {1000 * ms / max(n, 1):.1f} |")


if __name__ == "__main__":
    main()
