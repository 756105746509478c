"""Train one system's LoRA adapter: `python -m stages.train --system baseline|gem|polychromic ...`.

dvc.yaml calls the per-system shells (stages/train_baseline.py, ...) so each stage declares only the
params sections it reads. Checkpoints for resuming a killed run go to `<out>/../.ckpt/<system>/`
(git-ignored, not a DVC out; deleted once the adapter is written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.cli import run
from lib.config import ParamsError, load_section, read_params
from lib.io import read_parquet
from lib.models import ModelParams
from lib.schemas import EXAMPLES
from lib.train import SYSTEMS, GemParams, LoraParams, LossParams, TrainParams, train


def main(argv: list[str] | None = None, system: str | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    if system is None:
        ap.add_argument("--system", choices=SYSTEMS, required=True)
    ap.add_argument("--train", required=True, help="train split Parquet (schema EXAMPLES)")
    ap.add_argument(
        "--val", default=None, help="val split Parquet: the val curves (train.val_every)"
    )
    ap.add_argument("--out", required=True, help="adapter folder to write (PEFT, adapter only)")
    ap.add_argument("--live", default=None, help="DVCLive folder for training curves")
    ap.add_argument(
        "--ckpt", default=None, help="checkpoint folder (default <out>/../.ckpt/<system>)"
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    system = system or args.system

    seed = read_params(args.params).get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ParamsError(f"{args.params}: top-level 'seed' must be an integer, got {seed!r}")
    model = load_section(ModelParams, "model", args.params)
    lora = load_section(LoraParams, "lora", args.params)
    train_params = load_section(TrainParams, "train", args.params)
    if train_params.seed is not None:  # retrain on the same data and split (params.yaml train.seed)
        seed = train_params.seed
    loss = load_section(LossParams, "loss", args.params) if system == "polychromic" else None
    gem = load_section(GemParams, "gem", args.params) if system == "gem" else None
    df = read_parquet(args.train, EXAMPLES)
    val = read_parquet(args.val, EXAMPLES) if args.val else None
    ckpt = Path(args.ckpt) if args.ckpt else Path(args.out).parent / ".ckpt" / system
    result = train(
        system,
        df,
        seed=seed,
        model_params=model,
        lora=lora,
        train_params=train_params,
        loss=loss,
        gem=gem,
        out_dir=args.out,
        live_dir=args.live,
        ckpt_dir=ckpt,
        train_file=args.train,
        val_df=val,
        val_file=args.val,
        progress=not args.no_progress,
    )
    d = result["data"]
    if result["rank"] != 0:
        return
    print(
        f"{system}: {result['steps']} steps on {d['used']} pairs, {result['world']} process(es) "
        f"({d['skipped_null_reference']} skipped: null reference; {d['truncated']} truncated) -> {args.out}"
    )
    gpu = f", GPU peak {result['gpu_peak_gib']:.1f} GiB" if result["gpu_peak_gib"] else ""
    print(f"{system}: steps took {result['seconds']:.1f} s{gpu} ({result['split']})")


if __name__ == "__main__":
    run(main)
