"""One optimizer step: draw → reward → credit → objective → backward (`Trainer.step`).

RNG isolation. The data order has its own generator (seed, epoch); LoRA init and dropout use the
global torch RNG. Samples come from `lib.sampling.sample`, one generator per sample seeded from
(seed, step, example, i) (`examples.sample_seed`), inside `torch.random.fork_rng`: sampling and
scoring never move the training RNG.

On-policy. Samples are drawn with every dropout off (eval mode), at temperature 1 and top-p 1
(`LossParams` refuses anything else), and the packed pass that computes log π runs with every
dropout module off too: log π in the loss is the distribution the samples came from (the
sampler's recorded log-probs agree to float rounding; tested, and logged as `onpolicy_gap`). The
polychromic step's CE therefore sees no LoRA dropout either; baseline and gem keep it. The step's
backward keeps the forward's dropout state: gradient checkpointing recomputes the layers there.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lib.distributed import Dist
from lib.packing import TreePack, tree_pack
from lib.sampling import StaticDecoder, eos_ids, sample
from lib.train import losses, packed_lm
from lib.train.engine import Engine
from lib.train.examples import DataOrder, Example, sample_seed
from lib.train.lora_ctx import adapters_off, dropout_off, lora_layers, lora_row_scale
from lib.train.objective import Shares, make_objective
from lib.train.params import GemParams, LossParams, TrainParams
from lib.train.scorer import Scorer, domain_of


@dataclass(frozen=True)
class Draw:
    """N samples per example of one micro-batch, (B, N) everywhere."""

    seeds: list[list[int]]
    token_ids: list[list[list[int]]]
    texts: list[list[str]]
    logprob: torch.Tensor  # (B, N) float64: log π(y|x) recorded by the sampler


@dataclass(frozen=True)
class Packed:
    """What the polychromic objective needs from one packed forward."""

    ce: torch.Tensor  # mean CE over reference tokens
    logp: torch.Tensor  # (B, N) log π(y_i|x), with grad
    n_tokens: torch.Tensor  # Σ|y_i|: sample tokens in the micro-batch
    kl: torch.Tensor | None  # k2 mean over sample tokens, with grad (None when kl_coef = 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


class Trainer:
    """Holds the LoRA model, optimizer and data; `step()` runs one optimizer step."""

    def __init__(
        self,
        system: str,
        model: Any,  # a PeftModel in train mode
        tokenizer: Any,
        examples: list[Example],
        train: TrainParams,
        seed: int,
        loss: LossParams | None = None,
        gem: GemParams | None = None,
        *,
        dist: Dist | None = None,
        engine: Engine | None = None,
    ):
        self.system, self.model, self.tokenizer, self.examples = system, model, tokenizer, examples
        self.train, self.seed, self.loss, self.gem = train, seed, loss, gem
        # The packed forward, wrapped by DDP/FSDP or bare, and the rank (lib/distributed.py).
        self.engine = engine or Engine.local(model, dist)
        self.dist = self.engine.dist
        self.objective = make_objective(system, loss, gem)
        if self.objective.samples and self.engine.sharded:
            raise ValueError(
                f"{system} samples every step with the full model, which FSDP shards over ranks: "
                "launch it with DDP (accelerate launch --config_file configs/accelerate/ddp.yaml); "
                "FSDP serves baseline and gem"
            )
        self.step_idx = 0  # optimizer steps done
        self.cursor = 0  # examples consumed (over all ranks)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id
        self.eos = eos_ids(tokenizer, model)
        self.order = DataOrder(len(examples), seed)
        self.total_steps = train.max_steps
        if self.total_steps <= 0:  # epochs over the data, counted in global batches
            per_step = train.batch_size * train.grad_accum * self.dist.world
            self.total_steps = train.epochs * math.ceil(len(examples) / per_step)
        # After wrapping: under FSDP these are the wrapper's (sharded) parameters.
        self.params = [p for p in self.engine.module.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameter (LoRA not attached?)")
        self.optimizer = torch.optim.AdamW(
            self.params, lr=train.lr, weight_decay=train.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(train.warmup_steps, self.total_steps)
        )
        self.scorer = (
            Scorer(loss, self.device, domain_of(examples)) if self.objective.samples else None
        )
        self._decoder: StaticDecoder | None = None
        self._lora_layers: list[torch.nn.Module] | None = None  # found on the first KL pass
        if self.objective.samples and loss is not None and loss.kl_coef != 0:
            self._fused_kl()  # the KL pass runs each step: an impossible kl_pass fails here
        self.seen_batches: list[list[int]] = []  # example indices per micro-batch (tests read it)
        self.last_draw: Draw | None = None  # the last micro-batch's samples (tests read it)

    # -- the pieces of a step -----------------------------------------------------------------

    def _micro_batch(self) -> list[Example]:
        # One global micro-batch in the single-process order; this rank takes its slice.
        per, rank = self.train.batch_size, self.dist.rank
        idx = self.order.take(self.cursor, per * self.dist.world)
        self.cursor += len(idx)
        batch = [self.examples[i] for i in idx[rank * per : (rank + 1) * per]]
        self.seen_batches.append([e.index for e in batch])
        return batch

    def _shares(self, batch: Sequence[Example], draw: Draw | None) -> Shares:
        """Each term is a per-token mean on this rank; weighted by the rank's share of the global
        tokens, the mean gradient over ranks (DDP's) is the global per-token mean's."""
        if self.dist.world == 1:
            return Shares()
        ref = sum(len(e.target_ids) for e in batch)
        smp = sum(len(c) for g in draw.token_ids for c in g) if draw is not None else 0
        w = self.dist.world
        return Shares(ref * w / self.dist.sum(ref), smp * w / self.dist.sum(smp) if draw else 1.0)

    def draw(
        self,
        batch: Sequence[Example],
        n: int | None = None,
        seed_of: Callable[[Example, int], int] | None = None,
    ) -> Draw:
        """n (default `loss.num_samples`) samples per example (dropout off, T = 1, top-p = 1);
        sample i of example e seeded by seed_of(e, i) (default: the training sample seeds)."""
        assert self.loss is not None
        n = n or self.loss.num_samples
        if seed_of is None:

            def seed_of(e: Example, i: int) -> int:
                return sample_seed(self.seed, self.step_idx, e.index, i)

        prompts = [e.prompt_ids for e in batch for _ in range(n)]
        seeds = [seed_of(e, i) for e in batch for i in range(n)]
        was_training = self.model.training
        self.model.eval()
        draw = dict(eos_token_ids=self.eos, pad_token_id=self.pad_id, temperature=1.0, top_p=1.0)
        try:
            decoder = self._static_decoder(len(prompts))
            # A val prompt may be longer than every train prompt the decoder was sized for.
            if decoder is not None and max(map(len, prompts)) <= decoder.width:
                comps = decoder.sample(prompts, seeds, **draw)
            else:
                comps = sample(
                    self.model, prompts, seeds, max_new_tokens=self.loss.max_new_tokens, **draw
                )
        finally:
            self.model.train(was_training)

        def rows(xs: list[Any]) -> list[list[Any]]:
            return [xs[b * n : (b + 1) * n] for b in range(len(batch))]

        ids = rows([c.token_ids for c in comps])
        return Draw(
            seeds=rows(seeds),
            token_ids=ids,
            texts=[self.tokenizer.batch_decode(g, skip_special_tokens=True) for g in ids],
            logprob=torch.tensor([c.logprob for c in comps], dtype=torch.float64).view(-1, n),
        )

    @property
    def draw_rows(self) -> int | None:
        """The rows every draw through the run's static decoder has (B·N), or None where draws
        are eager (CPU, `loss.decode: eager`): a draw of any other size falls back to the eager
        sampler, ~10x slower a token on a GPU, so val draws are batched to this."""
        if self.loss is None or self.loss.decode == "eager" or self.device.type != "cuda":
            return None
        return self.train.batch_size * self.loss.num_samples

    def _static_decoder(self, rows: int) -> StaticDecoder | None:
        """The run's one StaticDecoder (built and captured on first use), or None for eager.

        auto = compile: torch.compile's reduce-overhead step (~2 min to build once per run); on the
        8B bench it samples faster than graph, the eager step captured as one CUDA graph (0.41 vs
        0.49 s a step, bench/README.md), which builds in about one step.
        """
        if self.draw_rows is None:
            return None
        if self._decoder is None:
            width = max(len(e.prompt_ids) for e in self.examples)  # fixed: one capture per run
            mode = "graph" if self.loss.decode == "graph" else "compile"
            self._decoder = StaticDecoder(
                self.model, rows, width, self.loss.max_new_tokens, mode=mode
            )
        return self._decoder if self._decoder.rows == rows else None

    def reference_logits(self, batch: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (K, V), targets (K,)) at every reference token of the micro-batch, dropout as
        set: one packed, padding-free forward (prompt + reference per example), the LM head only
        where a reference token is predicted. A padded batch of social's chats was a third padding
        and computed the LM head over every prompt position too (~2× the work)."""
        pack = tree_pack([(e.prompt_ids, [e.target_ids]) for e in batch], self.device, self.pad_id)
        return self._packed_logits(pack), pack.targets

    def _packed_logits(self, pack: TreePack, copies: int = 1, **head: Any) -> torch.Tensor:
        """Logits (copies·K, V) of every target of `pack`, one forward through the engine's
        (wrapped) PackedLM; the LM head only where predicted. copies = 2 runs the rows twice in one
        batch, (2R, W): the second copy is whatever `lora_row_scale` makes of it (fused KL).
        `head`: PackedLM's targets/chunk, for log-probs instead (`_packed_logprobs`)."""
        mask = pack.additive_mask(self.engine.dtype)
        return self.engine.module(
            pack.input_ids, mask, pack.position_ids, pack.keep, copies, **head
        )

    def _packed_logprobs(self, pack: TreePack, copies: int = 1) -> torch.Tensor:
        """log p (K,) of every target of `pack`, or (copies, K) (`_packed_logits`). Where
        `logprob_chunk` says so (CUDA) the LM head runs in chunks recomputed in the backward: no
        (copies·K, V) logits in memory."""
        chunk = packed_lm.logprob_chunk(self.device, self.engine.sharded)
        tok = self._packed_logits(pack, copies, targets=pack.targets, chunk=chunk)
        return tok.view(copies, -1) if copies > 1 else tok  # (copies, K) | (K,)

    def _fused_kl(self) -> bool:
        mode = self.loss.kl_pass if self.loss is not None else "separate"
        # Gradient checkpointing recomputes each layer in the backward, after lora_row_scale's
        # hooks are gone: the copy's rows would recompute with their LoRA update on, and torch
        # refuses the mismatch (CheckpointError, seen on the H200 with the 0.5B coder).
        flag = "is_activation_checkpointing"  # transformers 5's name; 4's below
        if not hasattr(self.model, flag):
            flag = "is_gradient_checkpointing"
        checkpointing = bool(getattr(self.model, flag, False))
        if mode == "auto":
            mode = "fused" if self.device.type == "cuda" and not checkpointing else "separate"
        if mode == "fused" and checkpointing:
            raise ValueError(
                "loss.kl_pass fused cannot run with model.gradient_checkpointing: the backward "
                "recomputes the layers without the fused pass's per-row LoRA scale; set "
                "loss.kl_pass: separate (or auto)"
            )
        return mode == "fused"

    def _reference_logprobs(self, pack: TreePack) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π (K,) with grad, log π_ref (K,) without) of every target of `pack`."""
        if self._lora_layers is None:
            self._lora_layers = lora_layers(self.model)
        if self._fused_kl():
            # Rows [0, R) keep their LoRA update, rows [R, 2R) get it times 0: the base model's
            # values exactly (x + 0 = x), from the same kernels; at LoRA B = 0 the two copies are
            # the same bits. The copy's log-probs are detached, so it adds no gradient.
            on = torch.ones(2 * pack.input_ids.shape[0], device=self.device)
            on[pack.input_ids.shape[0] :] = 0
            with lora_row_scale(self._lora_layers, on):
                both = self._packed_logprobs(pack, copies=2)  # (2, K)
            return both[0], both[1].detach()
        tok = self._packed_logprobs(pack)
        with torch.no_grad(), adapters_off(self._lora_layers):
            return tok, self._packed_logprobs(pack)

    def packed_pass(
        self, batch: Sequence[Example], completions: list[list[list[int]]], kl: bool
    ) -> Packed:
        """CE on the references, log π of the samples and (kl) their k2 to the base model.

        Each prompt appears once, followed by its reference and its N samples as sibling branches
        (`lib.packing`): B·P + B·R + B·N·L tokens with no padding. Dropout off (on-policy). The
        base model's log-probs come from the same pack with the LoRA updates off, without grad
        (`_reference_logprobs`: fused or separate): at LoRA B = 0 they are the same bits, so the
        KL is exactly 0 at initialisation.
        """
        n = len(completions[0])
        groups = [(e.prompt_ids, [e.target_ids, *completions[b]]) for b, e in enumerate(batch)]
        pack = tree_pack(groups, self.device, self.pad_id)
        with dropout_off(self.model):
            ref_tok = None
            if kl:
                tok, ref_tok = self._reference_logprobs(pack)  # (K,), (K,)
            else:
                tok = self._packed_logprobs(pack)  # (K,)
        is_ref = pack.owner % (n + 1) == 0  # continuation 0 of every group is the reference
        sums = torch.zeros(pack.n_continuations, dtype=tok.dtype, device=tok.device)
        sums = sums.index_add(0, pack.owner, tok).view(len(batch), n + 1)
        smp = ~is_ref
        return Packed(
            ce=-tok[is_ref].mean(),  # mean over reference tokens, as `losses.ce_loss`
            logp=sums[:, 1:],
            n_tokens=smp.sum(),
            kl=losses.kl_k2(tok[smp], ref_tok[smp]) if ref_tok is not None else None,
        )

    def _backward(
        self, terms: dict[str, torch.Tensor], norms: dict[str, torch.Tensor] | None
    ) -> None:
        """Accumulate ∇Σ terms / grad_accum into .grad; with `norms`, also each term's own flat
        gradient (summed over micro-batches): one backward per term instead of one in all, on the
        steps that measure them."""
        scale = 1.0 / self.train.grad_accum
        if norms is None:
            (sum(terms.values()) * scale).backward()
            return
        names = list(terms)
        for k, name in enumerate(names):
            grads = torch.autograd.grad(
                terms[name] * scale, self.params, retain_graph=k < len(names) - 1, allow_unused=True
            )
            grads = [
                torch.zeros_like(p) if g is None else g
                for p, g in zip(self.params, grads, strict=True)
            ]
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g.clone() if p.grad is None else p.grad + g
            flat = torch.cat([g.detach().reshape(-1).float() for g in grads])
            norms[name] = norms[name] + flat if name in norms else flat

    # -- one optimizer step ------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        # reward: the reward's own wall time (overlapping the forward); scoring: time the step
        # waited for reward + distances + credit after its forward (the part not hidden).
        timing = dict.fromkeys(("sampling", "reward", "scoring", "fwd_bwd"), 0.0)
        logs: dict[str, float] = {}
        every = self.loss.grad_norm_every if self.loss is not None else 0
        norms: dict[str, torch.Tensor] | None = (
            {} if every > 0 and (self.step_idx + 1) % every == 0 else None
        )

        def add(k: str, v: float) -> None:
            logs[k] = logs.get(k, 0.0) + v / self.train.grad_accum

        self.model.train()
        for micro in range(self.train.grad_accum):
            batch = self._micro_batch()
            draw = pending = credit = None
            if self.objective.samples:
                t = time.perf_counter()
                with torch.random.fork_rng(
                    devices=[self.device] if self.device.type == "cuda" else []
                ):
                    draw = self.last_draw = self.draw(batch)  # 1. draw
                    _sync(self.device)
                    timing["sampling"] += time.perf_counter() - t
                    pending = self.scorer.submit(batch, draw)  # 2. reward (may run meanwhile)
            # The wrapper averages gradients over ranks in the last micro-batch's backward; a norm
            # step's per-term autograd.grad bypasses it (averaged explicitly below).
            last = micro == self.train.grad_accum - 1
            # Gradient checkpointing recomputes the layers in the backward, which must see the
            # forward's dropout state and attention kernels, or torch refuses the recompute
            # (CheckpointError on the H200: extra dropout masks; another sdpa backend's saved
            # tensors) and the gradient would be of another function. The packed pass runs with
            # dropout off (on-policy); baseline and gem keep dropout on throughout.
            hold = getattr(self.objective, "packed", False)
            with (
                self.engine.sync(norms is None and last),
                dropout_off(self.model) if hold else contextlib.nullcontext(),
                packed_lm.attention_backends(self.device),
            ):
                t = time.perf_counter()
                out = self.objective.forward(self, batch, draw)  # the forward pass(es)
                timing["fwd_bwd"] += time.perf_counter() - t
                if pending is not None:
                    t = time.perf_counter()
                    with torch.random.fork_rng(devices=[]):
                        credit = pending.result()  # 3. credit
                    timing["scoring"] += time.perf_counter() - t
                    timing["reward"] += credit.reward_seconds
                    add("diversity", float(credit.diversity.mean()))
                    add("reward", float(credit.reward.mean()))
                t = time.perf_counter()
                terms = self.objective.terms(out, credit, self._shares(batch, draw))  # 4. objective
                self._backward(terms.losses, norms)  # 5. backward
            _sync(self.device)
            timing["fwd_bwd"] += time.perf_counter() - t
            add("loss", float(sum(terms.losses.values()).detach()))
            for k, v in terms.logs.items():
                add(k, v)
            if draw is not None and hasattr(out, "logp"):
                gap = float((draw.logprob - out.logp.detach().double().cpu()).abs().max())
                logs["onpolicy_gap"] = max(logs.get("onpolicy_gap", 0.0), gap)
        t = time.perf_counter()
        if norms is not None:
            self.engine.mean_grads(self.params)
            for name, flat in norms.items():  # this rank's own gradient of each term
                logs[f"grad_norm_{name}"] = float(flat.norm())
        grad_norm = self.engine.clip_grad_norm_(
            self.params, self.train.max_grad_norm if self.train.max_grad_norm > 0 else math.inf
        )
        logs["grad_norm"] = float(grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        timing["fwd_bwd"] += time.perf_counter() - t
        self.step_idx += 1
        if self.dist.world > 1:  # logged values: the mean over ranks
            logs = {k: self.dist.sum(v) / self.dist.world for k, v in logs.items()}
        logs["step_time"] = time.perf_counter() - t0
        if self.device.type == "cuda":  # what has to fit the GPU, model included
            logs["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        logs.update({f"time_{k}": v for k, v in timing.items()})
        return logs
