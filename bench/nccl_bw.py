"""All-reduce bandwidth between the GPUs of one machine through NCCL, at the size of a LoRA
gradient (issue 19: what DDP's gradient sync costs a step).

    torchrun --nproc_per_node 2 bench/nccl_bw.py --mib 176 --repeats 10

Prints, on rank 0, the median time of an all-reduce of a float32 tensor of that size and its
bus bandwidth (2 (n-1)/n × bytes / time, NCCL's own convention). NCCL_DEBUG=INFO shows the
transport NCCL picked (P2P/NVLink, SHM through host memory, or the network).
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.distributed as dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=float, default=176.0)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    n = dist.get_world_size()
    x = torch.ones(int(args.mib * 2**20 / 4), device="cuda")
    for _ in range(3):
        dist.all_reduce(x)
    times = []
    for _ in range(args.repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dist.all_reduce(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    t = statistics.median(times)
    if dist.get_rank() == 0:
        nbytes = x.numel() * 4
        bus = 2 * (n - 1) / n * nbytes / t / 1e9
        print(
            f"all_reduce {args.mib:.0f} MiB float32 on {n} GPUs: {t * 1000:.2f} ms, bus {bus:.1f} GB/s"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
