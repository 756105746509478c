"""LoRA training loop for the three systems: baseline (CE), gem (GEM loss), polychromic (CE + λ·diversity).

One loop, one data order, one LoRA setup; the systems differ only in the per-micro-batch loss.

Determinism and RNG isolation. The data order comes from its own `torch.Generator` (seed, epoch);
LoRA init and dropout use the global torch RNG seeded once from `seed`. Polychromic's samples come
from `lib.sampling.sample` with one generator per row seeded from (seed, step, example, i), inside
`torch.random.fork_rng`, with the model in eval mode (dropout off) — so sampling and scoring never
move the training RNG. With λ = 0 the diversity term is not added (nor its forward pass run), and
polychromic trains bit for bit like baseline; samples are still drawn and their diversity logged.

Checkpoints (resume after a kill). Every `train.checkpoint_every` optimizer steps the adapter,
optimizer, scheduler, every RNG state, the step and the data cursor go atomically to
`<ckpt_dir>/state.pt` (default `models/.ckpt/<system>/`, outside the DVC out and git-ignored by a
`.gitignore` the loop writes there). A run resumes from it when its `params_hash` (system, seed,
every params section read, the train file's bytes) matches, and deletes it after writing the final
adapter. The resumed run ends with the same adapter tensors as an uninterrupted one (CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from lib.chat import IGNORE_INDEX, training_example
from lib.distributed import Dist, init_dist
from lib.io import atomic_path
from lib.models import ModelParams, load_model
from lib.packing import TreePack, continuation_logprobs, tree_pack
from lib.sampling import StaticDecoder, eos_ids, sample
from lib.train import losses
from lib.train.credit import loo_credit, marginal_credit, set_diversity

SYSTEMS = ("baseline", "gem", "polychromic")


@dataclass(frozen=True)
class LoraParams:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 1  # used only when max_steps <= 0
    max_steps: int = 40  # optimizer steps; <= 0 means `epochs` passes over the data
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 4
    max_length: int = 128  # prompt + reference tokens; longer targets are cut
    max_grad_norm: float = 1.0  # <= 0 disables clipping
    checkpoint_every: int = 10  # optimizer steps; <= 0 disables checkpoints
    log_every: int = 1  # optimizer steps between DVCLive rows


@dataclass(frozen=True)
class LossParams:
    lambda_: float = 0.3  # params.yaml: `lambda`
    objective: Literal["additive", "multiplicative"] = "additive"
    num_samples: int = 4
    diversity: Literal["semantic", "lexical"] = "semantic"
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    # auto: on CUDA, decode the samples with a static KV cache and a CUDA-graphed step
    # (lib.sampling.StaticDecoder: ~5× faster decoding at 8B, ~2 min one-off compile); eager: always
    # the dynamic-cache sampler (the only path on CPU).
    decode: Literal["auto", "eager"] = "auto"


@dataclass(frozen=True)
class GemParams:
    beta: float = 0.7
    h: Literal["linear", "logsigmoid"] = "linear"


@dataclass(frozen=True)
class Example:
    index: int  # row in the train file: names it in errors and seeds its samples
    input_ids: list[int]
    labels: list[int]
    n_prompt: int  # leading prompt tokens of input_ids
    reference: str

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.n_prompt]


@dataclass
class DataReport:
    rows: int = 0
    used: int = 0
    skipped_null_reference: int = 0
    truncated: int = 0


def build_examples(
    df: pd.DataFrame, tokenizer: Any, max_length: int, where: str = "train"
) -> tuple[list[Example], DataReport]:
    """Tokenise train rows (input → reference); rows with a null reference are skipped and counted."""
    report = DataReport(rows=len(df))
    out = []
    for row, (inp, ref) in enumerate(zip(df["input"], df["reference"], strict=True)):
        if ref is None or (isinstance(ref, float) and math.isnan(ref)):
            report.skipped_null_reference += 1
            continue
        try:
            ids, labels = training_example(tokenizer, str(inp), str(ref), max_length)
            full, _ = training_example(tokenizer, str(inp), str(ref), None)
        except ValueError as e:
            raise ValueError(f"{where}: row {row}: {e}") from e
        report.truncated += len(full) > len(ids)
        n_prompt = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        out.append(Example(row, ids, labels, n_prompt, str(ref)))
    report.used = len(out)
    if not out:
        raise ValueError(f"{where}: no row with a reference to train on ({report.rows} rows)")
    return out, report


def collate(batch: Sequence[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids / attention_mask / labels."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def sample_seed(seed: int, step: int, example: int, i: int) -> int:
    """A 63-bit seed for sample i of `example` at optimizer step `step`, independent of batch layout."""
    h = hashlib.sha256(f"polychromic-sample:{seed}:{step}:{example}:{i}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


class DataOrder:
    """Example positions for a cursor (examples consumed so far): a fresh permutation each epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
        return self._perms[epoch]

    def take(self, cursor: int, count: int) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in range(cursor, cursor + count)]


# ---------------------------------------------------------------------------------------------
# Model setup


def attach_lora(model: Any, lora: LoraParams, model_params: ModelParams) -> Any:
    """Wrap `model` with a fresh LoRA adapter (QLoRA prep when 4-bit), in train mode."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if model_params.load_in_4bit:
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


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


# ---------------------------------------------------------------------------------------------
# Scoring samples


class Scorer:
    """Per-sample credit (B, N) and set diversity D(Y) (B,) for groups of N sampled texts."""

    def __init__(self, loss: LossParams, device: torch.device):
        self.loss, self.device = loss, device

    def __call__(
        self, texts: list[list[str]], references: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = len(texts), len(texts[0])
        emb = None
        if self.loss.diversity == "semantic" or self.loss.objective == "multiplicative":
            from lib.embed import embed_tensor

            flat = [t for g in texts for t in g]
            extra = references if self.loss.objective == "multiplicative" else []
            emb = embed_tensor(flat + extra, device=self.device).to(self.device)
        if self.loss.diversity == "semantic":
            dist = losses.semantic_distances(emb[: b * n].view(b, n, -1))
        elif self.loss.diversity == "lexical":
            dist = losses.lexical_distances(texts).to(self.device)
        else:
            raise ValueError(f"loss.diversity: unknown '{self.loss.diversity}'")
        if self.loss.objective == "additive":
            credit = loo_credit(dist)
        elif self.loss.objective == "multiplicative":
            quality = losses.quality_scores(emb[: b * n].view(b, n, -1), emb[b * n :])
            credit = marginal_credit(quality, dist)
        else:
            raise ValueError(f"loss.objective: unknown '{self.loss.objective}'")
        return credit.float(), set_diversity(dist).float()


# ---------------------------------------------------------------------------------------------
# The step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Trainer:
    """Holds the LoRA model, optimizer and data; `step()` runs one optimizer step."""

    system: str
    model: Any  # a PeftModel in train mode
    tokenizer: Any
    examples: list[Example]
    train: TrainParams
    seed: int
    loss: LossParams = field(default_factory=LossParams)
    gem: GemParams = field(default_factory=GemParams)
    step_idx: int = 0  # optimizer steps done
    cursor: int = 0  # examples consumed (over all ranks)
    dist: Dist = field(default_factory=Dist)  # data-parallel rank (lib/distributed.py)
    _decoder: StaticDecoder | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system '{self.system}'; known: {SYSTEMS}")
        if self.system == "polychromic" and self.loss.num_samples < 2:
            raise ValueError("loss.num_samples must be >= 2: diversity needs at least a pair")
        self.device = next(self.model.parameters()).device
        self.pad_id = self.tokenizer.pad_token_id
        self.eos = eos_ids(self.tokenizer, self.model)
        self.order = DataOrder(len(self.examples), self.seed)
        self.total_steps = self.train.max_steps
        if self.total_steps <= 0:
            per_step = self.train.batch_size * self.train.grad_accum
            self.total_steps = self.train.epochs * math.ceil(len(self.examples) / per_step)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameter (LoRA not attached?)")
        self.params = params
        self.optimizer = torch.optim.AdamW(
            params, lr=self.train.lr, weight_decay=self.train.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.train.warmup_steps, self.total_steps)
        )
        self.scorer = Scorer(self.loss, self.device) if self.system == "polychromic" else None
        self.seen_batches: list[list[int]] = []  # example indices per micro-batch (tests read it)

    # -- polychromic pieces ------------------------------------------------------------------

    def draw_samples(self, batch: Sequence[Example]) -> list[list[list[int]]]:
        """N completions per example, (B, N) lists of token ids, without touching the training RNG."""
        n = self.loss.num_samples
        prompts = [e.prompt_ids for e in batch for _ in range(n)]
        seeds = [sample_seed(self.seed, self.step_idx, e.index, i) for e in batch for i in range(n)]
        was_training = self.model.training
        self.model.eval()  # dropout off while sampling
        draw = dict(
            eos_token_ids=self.eos,
            pad_token_id=self.pad_id,
            temperature=self.loss.temperature,
            top_p=self.loss.top_p,
        )
        try:
            decoder = self._static_decoder(len(prompts))
            if decoder is not None:
                comps = decoder.sample(prompts, seeds, **draw)
            else:
                comps = sample(
                    self.model, prompts, seeds, max_new_tokens=self.loss.max_new_tokens, **draw
                )
        finally:
            self.model.train(was_training)
        ids = [c.token_ids for c in comps]
        return [ids[i * n : (i + 1) * n] for i in range(len(batch))]

    def _packed_logprobs(
        self, groups: list[tuple[list[int], list[list[int]]]]
    ) -> tuple[torch.Tensor, torch.Tensor, TreePack]:
        """One forward over the tree-packed groups: (per-target log-probs, per-continuation sums)."""
        pack = tree_pack(groups, self.device, self.pad_id)
        base = self.model.get_base_model()  # LoRA layers are injected in place: still trained
        dtype = self.model.get_input_embeddings().weight.dtype
        hidden = base.get_decoder()(
            input_ids=pack.input_ids,
            attention_mask=pack.additive_mask(dtype),
            position_ids=pack.position_ids,
            use_cache=False,
        ).last_hidden_state  # (R, W, H)
        # The LM head only where a token is predicted: (K, V), not (R, W, V).
        logits = base.get_output_embeddings()(hidden.flatten(0, 1)[pack.keep])
        cap = getattr(base.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        tok, sums = continuation_logprobs(logits, pack)
        return tok, sums, pack

    def ce_and_sample_logprobs(
        self, batch: Sequence[Example], completions: list[list[list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CE on the references and log π(y_i|x) (B, N) of the samples, in one packed forward.

        Each prompt appears once, followed by its reference and its N samples as sibling branches
        (`lib.packing`): B·P + B·R + B·N·L tokens with no padding, instead of a padded CE batch plus
        B×N prompt-and-sample rows. Exact up to float rounding (tests compare the gradients).
        """
        n = self.loss.num_samples
        groups = [
            (e.prompt_ids, [e.input_ids[e.n_prompt :], *completions[b]])
            for b, e in enumerate(batch)
        ]
        tok, sums, pack = self._packed_logprobs(groups)
        is_ref = pack.owner % (n + 1) == 0  # continuation 0 of every group is the reference
        ce = -tok[is_ref].mean()  # mean over reference tokens, as `losses.ce_loss`
        return ce, sums.view(len(batch), n + 1)[:, 1:]

    def _static_decoder(self, rows: int) -> StaticDecoder | None:
        """The run's one StaticDecoder (built and compiled on first use), or None for eager."""
        if self.loss.decode != "auto" or self.device.type != "cuda":
            return None
        if self._decoder is None:
            width = max(len(e.prompt_ids) for e in self.examples)  # fixed: one compile per run
            self._decoder = StaticDecoder(self.model, rows, width, self.loss.max_new_tokens)
        return self._decoder if self._decoder.rows == rows else None

    def sample_logprobs(
        self, batch: Sequence[Example], completions: list[list[list[int]]]
    ) -> torch.Tensor:
        """log π(y_i|x) with grad for all B×N samples in one packed forward, (B, N)."""
        groups = [(e.prompt_ids, completions[b]) for b, e in enumerate(batch)]
        _, sums, _ = self._packed_logprobs(groups)
        return sums.view(len(batch), self.loss.num_samples)

    # -- one optimizer step ------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        timing = {"sampling": 0.0, "scoring": 0.0, "fwd_bwd": 0.0}
        acc: dict[str, float] = {"loss": 0.0, "ce": 0.0}
        if self.system == "polychromic":
            acc.update(lambda_term=0.0, diversity=0.0)
        self.model.train()
        for _ in range(self.train.grad_accum):
            # One global micro-batch in the single-process order; this rank takes its slice.
            per, rank = self.train.batch_size, self.dist.rank
            idx = self.order.take(self.cursor, per * self.dist.world)
            self.cursor += len(idx)
            batch = [self.examples[i] for i in idx[rank * per : (rank + 1) * per]]
            share = 1.0  # this rank's share of the global reference tokens, × world
            if self.dist.world > 1:
                tokens = sum(len(e.input_ids) - e.n_prompt for e in batch)
                share = tokens * self.dist.world / self.dist.sum(tokens)
            self.seen_batches.append([e.index for e in batch])
            term = None
            if self.system == "polychromic":
                t = time.perf_counter()
                with torch.random.fork_rng(
                    devices=[self.device] if self.device.type == "cuda" else []
                ):
                    completions = self.draw_samples(batch)
                    _sync(self.device)
                    timing["sampling"] += time.perf_counter() - t
                    t = time.perf_counter()
                    tokenizer = self.tokenizer
                    texts = [
                        tokenizer.batch_decode(g, skip_special_tokens=True) for g in completions
                    ]
                    credit, div = self.scorer(texts, [e.reference for e in batch])
                    _sync(self.device)
                    timing["scoring"] += time.perf_counter() - t
                acc["diversity"] += float(div.mean()) / self.train.grad_accum
            t = time.perf_counter()
            # λ = 0 adds nothing to the graph (and runs no extra forward, which would draw dropout
            # masks): polychromic then reproduces baseline bit for bit.
            if self.system == "polychromic" and self.loss.lambda_ != 0:
                ce, logp = self.ce_and_sample_logprobs(batch, completions)
                term = losses.diversity_term(credit.to(logp.device), logp)
                loss = (ce * share if share != 1.0 else ce) + self.loss.lambda_ * term
                acc["lambda_term"] += (
                    float(self.loss.lambda_ * term.detach()) / self.train.grad_accum
                )
            else:
                inputs = collate(batch, self.pad_id, self.device)
                labels = inputs.pop("labels")
                logits = self.model(**inputs, use_cache=False).logits  # (B, T, V)
                if self.system == "gem":
                    loss = losses.gem_loss(logits, labels, self.gem.beta, self.gem.h)
                    with torch.no_grad():
                        ce = losses.ce_loss(logits, labels)
                else:
                    loss = ce = losses.ce_loss(logits, labels)
                if share != 1.0:
                    loss = loss * share
            (loss / self.train.grad_accum).backward()
            _sync(self.device)
            timing["fwd_bwd"] += time.perf_counter() - t
            acc["loss"] += float(loss.detach()) / self.train.grad_accum
            acc["ce"] += float(ce.detach()) * share / self.train.grad_accum
        t = time.perf_counter()
        self.dist.mean_grads(self.params)
        if self.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        timing["fwd_bwd"] += time.perf_counter() - t
        self.step_idx += 1
        if self.dist.world > 1:  # logged values: the mean over ranks
            acc = {k: self.dist.sum(v) / self.dist.world for k, v in acc.items()}
        acc["step_time"] = time.perf_counter() - t0
        if self.device.type == "cuda":  # what has to fit the GPU, model included
            acc["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        acc.update({f"time_{k}": v for k, v in timing.items()})
        return acc

    # -- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        rng = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        adapter = {
            k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.model).items()
        }
        return {
            "adapter": adapter,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "step": self.step_idx,
            "cursor": self.cursor,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, state["adapter"])
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise ValueError(f"checkpoint adapter keys do not fit the model: {missing[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step_idx, self.cursor = int(state["step"]), int(state["cursor"])


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


def _save_checkpoint(
    trainer: Trainer,
    ckpt_dir: Path,
    run_hash: str,
    pending: dict[str, Any],
    history: list[tuple[int, dict[str, float]]] | None = None,
) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ignore = ckpt_dir.parent / ".gitignore"
    if ckpt_dir.parent.name == ".ckpt" and not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # scratch state: never committed
    state = trainer.state()
    state["hash"] = run_hash
    state["pending"] = pending
    state["live_history"] = list(history or [])
    with atomic_path(ckpt_dir / "state.pt") as tmp:
        torch.save(state, tmp)


def _sort_config_sets(path: Path) -> None:
    """PEFT keeps `target_modules` as a set and writes it in hash order, which changes with
    PYTHONHASHSEED from run to run: sort it so the same params give the same adapter bytes."""
    if not path.exists():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")


def _load_checkpoint(ckpt_dir: Path, run_hash: str) -> dict[str, Any] | None:
    path = ckpt_dir / "state.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("hash") != run_hash:
        print(f"polychromic: {path} is from other params or data; starting fresh", flush=True)
        return None
    return state


# ---------------------------------------------------------------------------------------------
# The whole run


LOGGED = ("loss", "ce", "lambda_term", "diversity", "step_time", "gpu_peak_gib")


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
    after_step: Callable[[Trainer], None] | None = None,
    progress: bool = True,
    tokenizer: Any | None = None,
) -> dict[str, Any]:
    """Train one system's LoRA adapter on `df` (schema EXAMPLES) and save only the adapter to `out_dir`."""
    from tqdm.auto import tqdm

    loss = loss or LossParams()
    gem = gem or GemParams()
    sections: dict[str, Any] = {
        "seed": seed,
        "model": model_params,
        "lora": lora,
        "train": train_params,
    }
    if system == "polychromic":
        sections["loss"] = loss
    if system == "gem":
        sections["gem"] = gem
    run_hash = params_hash(system, sections, train_file)

    from lib.models import resolve_device

    dist = init_dist(cpu=resolve_device(model_params.device).type == "cpu")
    torch.manual_seed(seed)  # the same on every rank: every rank starts from the same LoRA init
    random.seed(seed)
    np.random.seed(seed)
    base, tokenizer = load_model(model_params, tokenizer)
    examples, report = build_examples(
        df, tokenizer, train_params.max_length, str(train_file or "train")
    )
    model = attach_lora(base, lora, model_params)
    if dist.world > 1:
        torch.manual_seed(seed * 1_000_003 + dist.rank)  # then distinct dropout masks per rank
    trainer = Trainer(system, model, tokenizer, examples, train_params, seed, loss, gem, dist=dist)

    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    pending: dict[str, Any] = {"n": 0, "sums": {}}
    state = _load_checkpoint(ckpt, run_hash) if ckpt is not None else None
    if state is not None:
        trainer.load_state(state)
        pending = state.get("pending", pending)
        if dist.world > 1:  # the checkpoint holds rank 0's RNG streams
            torch.manual_seed(seed * 1_000_003 + dist.rank + 7919 * trainer.step_idx)
        if dist.main:
            print(
                f"polychromic: resuming {system} from step {trainer.step_idx} ({ckpt})", flush=True
            )

    # DVCLive rows logged so far, kept in the checkpoint: `dvc repro` deletes the curves before a
    # rerun, and a kill can leave rows past the checkpoint, so the curves of a resumed run are
    # rebuilt from here (never resumed from disk: that loses rows or repeats them).
    history: list[tuple[int, dict[str, float]]] = (
        list(state.get("live_history", [])) if state is not None else []
    )
    live = None
    if live_dir is not None and dist.main:
        from dvclive import Live

        live = Live(dir=str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=None)
        for k, v in dataclasses.asdict(report).items():
            live.log_metric(f"data/{k}", v, plot=False)
        for step, row in history:
            live.step = step
            for k, v in row.items():
                live.log_metric(f"train/{k}", v)
        if history:
            live.make_summary()

    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.step_idx,
        desc=f"train {system}",
        disable=not progress or not dist.main,
    )
    while trainer.step_idx < trainer.total_steps:
        m = trainer.step()
        pending["n"] += 1
        for k in LOGGED:
            if k in m:
                pending["sums"][k] = pending["sums"].get(k, 0.0) + m[k]
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
        if live is not None and (trainer.step_idx % max(1, train_params.log_every) == 0 or last):
            live.step = trainer.step_idx
            row = {k: v / pending["n"] for k, v in pending["sums"].items()}
            for k, v in row.items():
                live.log_metric(f"train/{k}", v)
            history.append((trainer.step_idx, row))
            live.make_summary()
            pending = {"n": 0, "sums": {}}
        every = train_params.checkpoint_every
        if (
            ckpt is not None
            and dist.main
            and every > 0
            and not last
            and trainer.step_idx % every == 0
        ):
            _save_checkpoint(trainer, ckpt, run_hash, pending, history)
        if after_step is not None:
            after_step(trainer)
    bar.close()

    if dist.main:
        with atomic_path(out_dir, is_dir=True) as tmp:
            model.save_pretrained(tmp)  # PEFT writes the adapter only
            _sort_config_sets(tmp / "adapter_config.json")
        if live is not None:
            live.end()
        if ckpt is not None and ckpt.exists():
            shutil.rmtree(ckpt, ignore_errors=True)
    dist.barrier()  # no rank exits (and no launcher reports success) before the adapter exists
    return {
        "steps": trainer.step_idx,
        "data": dataclasses.asdict(report),
        "hash": run_hash,
        "rank": dist.rank,
        "world": dist.world,
    }
