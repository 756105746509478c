"""A whole training run: model and LoRA setup, the step loop, checkpoints, curves, the adapter."""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lib.io import atomic_path
from lib.models import ModelParams, load_model
from lib.seeds import rng_seed
from lib.train.checkpoint import (
    load_checkpoint,
    load_trainer_state,
    params_hash,
    portable_adapter,
    save_checkpoint,
)
from lib.train.engine import Engine
from lib.train.examples import build_examples
from lib.train.logging import TrainLog, step_split
from lib.train.params import GemParams, LoraParams, LossParams, TrainParams
from lib.train.trainer import Trainer
from lib.train.validate import ValSet, evaluate


def attach_lora(
    model: Any, lora: LoraParams, model_params: ModelParams, *, sharded: bool = False
) -> Any:
    """Wrap `model` with a fresh LoRA adapter (QLoRA prep when 4-bit), in train mode.

    sharded (FSDP): no `prepare_model_for_kbit_training`, whose float32 upcast of the norms would
    put two dtypes in one decoder layer's FSDP unit (FSDP flattens one dtype per unit)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if model_params.load_in_4bit and not sharded:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=model_params.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif model_params.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    return peft_model


def train(
    system: str,
    df: pd.DataFrame,
    *,
    seed: int,
    model_params: ModelParams,
    lora: LoraParams,
    train_params: TrainParams,
    loss: LossParams | None = None,
    gem: GemParams | None = None,
    out_dir: str | Path,
    live_dir: str | Path | None = None,
    ckpt_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    val_df: pd.DataFrame | None = None,
    val_file: str | Path | None = None,
    after_step: Callable[[Trainer], None] | None = None,
    progress: bool = True,
    tokenizer: Any | None = None,
) -> dict[str, Any]:
    """Train one system's LoRA adapter on `df` (schema EXAMPLES) and save only the adapter to
    `out_dir`; with `train.val_every` > 0, val curves on `val_df` (lib/train/validate.py)."""
    from tqdm.auto import tqdm

    from lib.models import resolve_device

    sections: dict[str, Any] = {"seed": seed, "model": model_params, "lora": lora}
    sections["train"] = train_params
    if system == "polychromic":
        sections["loss"] = loss
    if system == "gem":
        sections["gem"] = gem
    run_hash = params_hash(system, sections, train_file)

    engine = Engine.launch(cpu=resolve_device(model_params.device).type == "cpu")
    dist = engine.dist
    if engine.sharded and ckpt_dir is not None and train_params.checkpoint_every > 0:
        raise ValueError(
            "FSDP shards the optimizer state a resumable checkpoint holds whole: "
            "set train.checkpoint_every: 0 (e.g. -S train.checkpoint_every=0), or launch with DDP"
        )
    torch.manual_seed(seed)  # the same on every rank: every rank starts from the same LoRA init
    random.seed(seed)
    np.random.seed(seed)
    base, tokenizer = load_model(model_params, tokenizer)
    examples, report = build_examples(
        df, tokenizer, train_params.max_length, str(train_file or "train")
    )
    model = attach_lora(base, lora, model_params, sharded=engine.sharded)
    engine.wrap(model)  # DDP / FSDP around the packed forward (one process: the module itself)
    if torch.cuda.is_available() and base.device.type == "cuda":
        # The logged GPU peak is the training's: under FSDP each rank loaded the whole model
        # before sharding it.
        torch.cuda.reset_peak_memory_stats(base.device)
    if dist.world > 1:
        torch.manual_seed(rng_seed(seed, "train-dropout", dist.rank))  # distinct masks per rank
    trainer = Trainer(
        system, model, tokenizer, examples, train_params, seed, loss, gem, engine=engine
    )
    val = None
    if train_params.val_every > 0:
        if val_df is None:
            raise ValueError("train.val_every > 0 needs the val split (--val)")
        val = ValSet.build(
            val_df, tokenizer, train_params.max_length, train_params.val_inputs, str(val_file)
        )
    val_samples = loss.val_samples if loss is not None else 0

    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    state = load_checkpoint(ckpt, run_hash) if ckpt is not None else None
    if state is not None:
        load_trainer_state(trainer, state)
        if dist.world > 1:  # the checkpoint holds rank 0's RNG streams
            torch.manual_seed(rng_seed(seed, "train-dropout", dist.rank, trainer.step_idx))
        if dist.main:
            print(
                f"polychromic: resuming {system} from step {trainer.step_idx} ({ckpt})", flush=True
            )
    log = TrainLog(
        live_dir if dist.main else None, report, state.get("log") if state is not None else None
    )

    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.step_idx,
        desc=f"train {system}",
        disable=not progress or not dist.main,
    )
    seconds, gpu_peak = 0.0, 0.0
    # Wall seconds of the steps since the last val line, summed: where a GPU run's time goes.
    # `whole` is the same over the run, for the closing line (the sweeps run without val lines).
    since: dict[str, float] = {}
    whole: dict[str, float] = {}
    while trainer.step_idx < trainer.total_steps:
        m = trainer.step()
        log.add(m)
        seconds += m["step_time"]
        gpu_peak = max(gpu_peak, m.get("gpu_peak_gib", 0.0))
        for acc in (since, whole):
            for k in ("step_time", *(k for k in m if k.startswith("time_"))):
                acc[k] = acc.get(k, 0.0) + m[k]
            acc["steps"] = acc.get("steps", 0.0) + 1
        post = {
            "loss": f"{m['loss']:.3f}",
            "ce": f"{m['ce']:.3f}",
            "s/step": f"{m['step_time']:.2f}",
        }
        if "diversity" in m:
            post["div"] = f"{m['diversity']:.3f}"
        if "gpu_peak_gib" in m:
            post["GPU GiB"] = f"{m['gpu_peak_gib']:.1f}"
        bar.set_postfix(post)
        bar.update(1)
        last = trainer.step_idx == trainer.total_steps
        extra = None
        if val is not None and (trainer.step_idx % train_params.val_every == 0 or last):
            t_val = time.perf_counter()
            extra = evaluate(trainer, val, val_samples)  # every rank: no collective is skipped
            bar.write(
                f"step {trainer.step_idx}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in extra.items())
                + f" ({step_split(since)}; val {time.perf_counter() - t_val:.1f} s)"
            )
            since = {}
        if trainer.step_idx % max(1, train_params.log_every) == 0 or last or extra:
            log.row(trainer.step_idx, extra)
        every = train_params.checkpoint_every
        if (
            ckpt is not None
            and dist.main
            and every > 0
            and not last
            and trainer.step_idx % every == 0
        ):
            save_checkpoint(trainer, ckpt, run_hash, log.state())
        if after_step is not None:
            after_step(trainer)
    bar.close()

    full = engine.adapter_state_dict()  # FSDP: gathered to rank 0 (every rank takes part)
    if dist.main:
        with atomic_path(out_dir, is_dir=True) as tmp:
            model.save_pretrained(tmp, state_dict=full)  # PEFT writes the adapter only
            portable_adapter(tmp, model_params.base)
        log.end()
        if ckpt is not None and ckpt.exists():
            shutil.rmtree(ckpt, ignore_errors=True)
    dist.barrier()  # no rank exits (and no launcher reports success) before the adapter exists
    return {
        "steps": trainer.step_idx,
        "data": dataclasses.asdict(report),
        "hash": run_hash,
        "rank": dist.rank,
        "world": dist.world,
        "seconds": seconds,  # wall time of this run's steps (a resumed run: since the resume)
        "gpu_peak_gib": gpu_peak,
        "split": step_split(whole),  # "3.03 s/step over 200 steps: sampling 1.86, ..."
    }
