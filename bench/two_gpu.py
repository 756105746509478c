"""The Python side of bench/gpu_two.sh: one training run through the stages' own path
(`lib.train.train`: Engine, DDP/FSDP, Trainer) under whatever launcher starts it, each step's logs
written per rank to JSON; then markdown tables from those files.

    accelerate launch --num_processes 2 bench/two_gpu.py train --system baseline \
        --base smollm2-135m-instruct --batch-size 4 --steps 8 --out /tmp/two/baseline-2
    python bench/two_gpu.py curves /tmp/two/baseline-1 /tmp/two/baseline-2
    python bench/two_gpu.py throughput /tmp/two/*-qwen-*
    python bench/two_gpu.py memory /tmp/two/fsdp-*
    python bench/two_gpu.py testset --n 64 --out /tmp/two/gen      # test split + params for generate
    python bench/two_gpu.py gencmp /tmp/two/gen 2 T0 T1           # a row of the generate table

Params: params.yaml, then configs/gpu.yaml, then each `--set key.sub=value` (YAML values). Data:
data/split/train.parquet when there, else synthetic chat-length pairs (bench/train_step.py). The
MiniLM encoder (reward and diversity on social) falls back to a random-weight stand-in of its
shape where its package is missing, as bench/train_step.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from lib.config import deep_merge, read_params  # noqa: E402


def _params(sets: list[str], out: Path, rank: int) -> Path:
    p = deep_merge(read_params(ROOT / "params.yaml"), read_params(ROOT / "configs/gpu.yaml"))
    for item in sets:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = p
        for k in path:
            node = node[k]
        node[last] = yaml.safe_load(value)
    path = out / f"params-rank{rank}.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def _pairs(n: int) -> pd.DataFrame:
    split = ROOT / "data/split/train.parquet"
    if split.exists():
        return pd.read_parquet(split)
    from bench.train_step import synthetic_pairs

    df = synthetic_pairs(n)
    df["id"] = [f"s{i}" for i in range(n)]
    df["group"] = df["id"]
    df["split"] = "train"
    df["references"] = [[r] for r in df["reference"]]
    return df


def _encoder_stand_in(device) -> str | None:  # noqa: ANN001
    try:
        from lib.embed import minilm_path

        minilm_path()
        return None
    except Exception as e:  # noqa: BLE001 - the GPU image lacks the packaged encoder
        import lib.embed
        from bench.train_step import random_minilm

        lib.embed.embed_tensor = random_minilm(device)
        return f"random-weight MiniLM-shaped stand-in ({type(e).__name__})"


def _profiled(step, trainer, path: Path):  # noqa: ANN001, ANN202
    """One `Trainer.step` under torch.profiler: its ops by device time and by host time, to
    `path` (where a step's wall time goes when its work does not change)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        m = step(trainer)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    wall = time.perf_counter() - t
    table = prof.key_averages()
    by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    path.write_text(
        f"wall {wall:.3f} s (profiled), step_time {float(m['step_time']):.3f} s\n"
        + table.table(sort_by=by, row_limit=25)
        + "\n"
        + table.table(sort_by="self_cpu_time_total", row_limit=25)
    )
    return m


def train_run(args: argparse.Namespace) -> None:
    import torch

    from lib.config import load_section, load_seed
    from lib.models import ModelParams, resolve_device
    from lib.train import GemParams, LoraParams, LossParams, Trainer, TrainParams, train

    rank = int(os.environ.get("RANK", "0"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [
        f"model.base={args.base}",
        f"model.load_in_4bit={str(args.load_in_4bit).lower()}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        "train.checkpoint_every=0",
        "train.val_every=0",  # val curves are not what this measures (and need a val split)
        "lora.dropout=0.0",  # per-rank masks: 1 vs 2 processes compare only without dropout
        *args.set,
    ]
    path = _params(sets, out, rank)
    mp = load_section(ModelParams, "model", path)
    note = _encoder_stand_in(resolve_device(mp.device))
    records: list[dict[str, float]] = []
    step = Trainer.step

    def logged(self):  # noqa: ANN001, ANN202
        if len(records) + 1 in args.profile_steps:
            m = _profiled(step, self, out / f"prof-rank{rank}-step{len(records) + 1}.txt")
        else:
            m = step(self)
        records.append({k: float(v) for k, v in m.items()})
        if len(records) in args.profile_steps:
            records[-1]["profiled"] = 1.0  # slower under the profiler: out of the throughput
        return m

    Trainer.step = logged
    scratch = Path(tempfile.mkdtemp(prefix="two_gpu-"))
    result = train(
        args.system,
        _pairs(args.pairs),
        seed=load_seed(path),
        model_params=mp,
        lora=load_section(LoraParams, "lora", path),
        train_params=load_section(TrainParams, "train", path),
        loss=load_section(LossParams, "loss", path) if args.system == "polychromic" else None,
        gem=load_section(GemParams, "gem", path) if args.system == "gem" else None,
        out_dir=scratch / "adapter",  # not under OUT: tens of MB at 8B, and not measured
        progress=False,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    doc = {
        "system": args.system,
        "base": args.base,
        "batch_size": args.batch_size,
        "world": result["world"],
        "rank": result["rank"],
        "steps": records,
        "gpu_peak_gib": peak,
        "encoder": note,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(doc, indent=1))


def _load(d: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(d).glob("rank*.json"))]


def _present(dirs: list[str]) -> list[str]:
    """The runs that wrote their logs; a failed run is named on stderr and left out of a table."""
    ok = [d for d in dirs if _load(d)]
    for d in sorted(set(dirs) - set(ok)):
        print(f"{d}: no rank*.json (the run failed; see its log)", file=sys.stderr)
    return ok


def curves(dirs: list[str]) -> None:
    runs = {d: _load(d)[0] for d in _present(dirs)}  # rank 0's logs (the mean over ranks)
    if len(runs) < 2:
        print("(curves: fewer than two runs finished)")
        return
    heads = [f"{r['world']} proc × batch {r['batch_size']}" for r in runs.values()]
    print("| step | " + " | ".join(f"loss, {h}" for h in heads) + " | max rel. diff |")
    print("|---|" + "---|" * (len(heads) + 1))
    n = min(len(r["steps"]) for r in runs.values())
    for i in range(n):
        vals = [r["steps"][i]["loss"] for r in runs.values()]
        rel = (max(vals) - min(vals)) / max(abs(vals[0]), 1e-12)
        print(f"| {i + 1} | " + " | ".join(f"{v:.6f}" for v in vals) + f" | {rel:.1e} |")


def throughput(dirs: list[str]) -> None:
    print("| run | GPUs | batch / GPU | s/step (median, step 1 excluded) | samples/s | vs 1 GPU |")
    print("|---|---|---|---|---|---|")
    one: dict[str, float] = {}
    for d in _present(dirs):
        r = _load(d)[0]
        steps = [s for s in r["steps"][1:] if not s.get("profiled")]
        times = [s["step_time"] for s in steps] or [r["steps"][0]["step_time"]]
        sec = statistics.median(times)
        sps = r["batch_size"] * r["world"] / sec
        key = r["system"]
        if r["world"] == 1:
            one[key] = sps
        ratio = f"{sps / one[key]:.2f}×" if key in one else "-"
        print(
            f"| {Path(d).name} | {r['world']} | {r['batch_size']} | {sec:.3f} | {sps:.2f} | {ratio} |"
        )


def memory(dirs: list[str]) -> None:
    print("| run | GPUs | peak GiB per GPU (training, after wrap) | by rank |")
    print("|---|---|---|---|")
    for d in _present(dirs):
        ranks = _load(d)
        peaks = [max(s.get("gpu_peak_gib", 0.0) for s in r["steps"]) for r in ranks]
        by = ", ".join(f"{p:.1f}" for p in peaks)
        print(f"| {Path(d).name} | {ranks[0]['world']} | {max(peaks):.1f} | {by} |")


def gencmp(gen: Path, n: str, t0: float, t1: float) -> None:
    """One row of part d: the n-GPU run's time and whether its Parquet is the 1-GPU one."""
    df = pd.read_parquet(gen / f"gen-{n}.parquet")
    same = "-"
    if n != "1":
        ref = gen / "gen-1.parquet"
        if (gen / f"gen-{n}.parquet").read_bytes() == ref.read_bytes():
            same = "yes (bytes)"
        else:
            rows = int((pd.read_parquet(ref)["output"] != df["output"]).sum())
            same = f"no: {rows} of {len(df)} outputs differ (bf16 near-ties?)"
    print(f"| {n} | {t1 - t0:.1f} | {len(df)} | {len(df) / (t1 - t0):.1f} | {same} |")


def testset(n: int, out: Path, sets: list[str]) -> None:
    """A test split of n synthetic inputs and a params file for `stages.generate`."""
    from lib.io import write_parquet
    from lib.schemas import EXAMPLES

    out.mkdir(parents=True, exist_ok=True)
    df = _pairs(n).head(n).copy()
    df["split"] = "test"
    write_parquet(df, out / "test.parquet", EXAMPLES)
    write_parquet(df.assign(split="train"), out / "train.parquet", EXAMPLES)
    _params(sets, out, 0).rename(out / "params.yaml")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--system", choices=["baseline", "gem", "polychromic"], required=True)
    t.add_argument("--base", required=True)
    t.add_argument("--batch-size", type=int, required=True, help="per process")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--load-in-4bit", action="store_true")
    t.add_argument("--pairs", type=int, default=256, help="synthetic pairs when no data split")
    t.add_argument("--set", action="append", default=[], help="params key=value (repeatable)")
    t.add_argument("--out", required=True)
    t.add_argument(
        "--profile-steps",
        type=lambda v: {int(x) for x in v.split(",") if x},
        default=set(),
        help="1-based steps to run under torch.profiler (prof-rank<r>-step<n>.txt in --out)",
    )
    for name in ("curves", "throughput", "memory"):
        sub.add_parser(name).add_argument("dirs", nargs="+")
    c = sub.add_parser("gencmp")
    for name, kind in (("gen", Path), ("n", str), ("t0", float), ("t1", float)):
        c.add_argument(name, type=kind)
    g = sub.add_parser("testset")
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--set", action="append", default=[])
    g.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        train_run(args)
    elif args.cmd == "gencmp":
        gencmp(args.gen, args.n, args.t0, args.t1)
    elif args.cmd == "testset":
        testset(args.n, Path(args.out), args.set)
    else:
        {"curves": curves, "throughput": throughput, "memory": memory}[args.cmd](args.dirs)


if __name__ == "__main__":
    main()
