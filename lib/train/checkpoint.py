"""Resumable training state (docs/training.md, "Resume after a kill").

Every `train.checkpoint_every` optimizer steps the adapter, optimizer, scheduler, every RNG state,
the step, the data cursor and the DVCLive rows so far go atomically to `<ckpt_dir>/state.pt`
(default `models/.ckpt/<system>/`, outside the DVC out and git-ignored by a `.gitignore` written
there). A run resumes from it when its `params_hash` (system, seed, every params section read,
the train file's bytes) matches. The resumed run ends with the same adapter tensors as an
uninterrupted one (CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.io import atomic_path
from lib.train.trainer import Trainer


def params_hash(system: str, sections: dict[str, Any], train_file: str | Path | None) -> str:
    """Identity of a run for resuming: system, every params section it reads, the train file's bytes."""
    h = hashlib.sha256()
    norm = {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in sections.items()
    }
    h.update(json.dumps({"system": system, "params": norm}, sort_keys=True, default=str).encode())
    if train_file is not None:
        h.update(Path(train_file).read_bytes())
    return h.hexdigest()


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    rng = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    adapter = {
        k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(trainer.model).items()
    }
    return {
        "adapter": adapter,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "rng": rng,
        "step": trainer.step_idx,
        "cursor": trainer.cursor,
    }


def load_trainer_state(trainer: Trainer, state: dict[str, Any]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(trainer.model, state["adapter"])
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
    if missing:
        raise ValueError(f"checkpoint adapter keys do not fit the model: {missing[:3]}")
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    trainer.step_idx, trainer.cursor = int(state["step"]), int(state["cursor"])


def save_checkpoint(
    trainer: Trainer, ckpt_dir: Path, run_hash: str, log_state: dict[str, Any]
) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ignore = ckpt_dir.parent / ".gitignore"
    if ckpt_dir.parent.name == ".ckpt" and not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # scratch state: never committed
    state = trainer_state(trainer)
    state["hash"] = run_hash
    state["log"] = log_state
    with atomic_path(ckpt_dir / "state.pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(ckpt_dir: Path, run_hash: str) -> dict[str, Any] | None:
    path = ckpt_dir / "state.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("hash") != run_hash:
        print(f"polychromic: {path} is from other params or data; starting fresh", flush=True)
        return None
    return state


def portable_adapter(out_dir: Path, base_name: str) -> None:
    """Make a saved adapter folder the same bytes on every machine.

    PEFT keeps `target_modules` as a set and writes it in hash order (sorted here), and records the
    base model's folder, for the embedded models a path under $POLYCHROMIC_CACHE, in
    adapter_config.json and its model card (README.md): both get `model.base` (e.g.
    `smollm2-135m-instruct`) instead. The generate stage loads the base from params, never from
    this field."""
    path = out_dir / "adapter_config.json"
    if not path.exists():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    where = cfg.get("base_model_name_or_path")
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["base_model_name_or_path"] = base_name
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    card = out_dir / "README.md"
    if where and where != base_name and card.exists():
        card.write_text(card.read_text(encoding="utf-8").replace(where, base_name), "utf-8")
