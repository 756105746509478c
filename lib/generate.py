"""`generate`: `num_samples` sampled completions per test input for one system.

Systems: zero_shot and few_shot prompt the base model with `lib.prompts` templates (wrapped by
`lib.chat.chat_prompt_ids`); baseline, gem and polychromic load their LoRA adapter on the base model
and see the raw input through `chat_prompt_ids`, exactly as in training.

Every sample has its own seed, `sample_seed(global seed, id, sample)` (BLAKE2b, stable across runs
and Python versions), and the sampler draws row i only from that seed: any sample can be
regenerated alone (`regenerate_one`), and a sample does not depend on batch size or batch-mates
(exactly on the CPU; on a GPU up to bf16 near-ties, which batch shapes and the graphed path's
kernels can resolve differently: bench/README.md).
The same (id, sample) gets the same seed in every system (common random numbers across systems).

Several processes (`accelerate launch --num_processes K -m stages.generate ...`): each rank loads
the model on its own device and samples a share of the test inputs (`shard_rows`: every K-th
input in prompt-length order, so each rank gets long and short ones); rank 0 gathers the
completions and alone returns the frame. Per-sample seeds make it the same frame as one
process's (exactly on the CPU, tested).

Speed: all (input, sample) rows of one max-new-tokens budget are sorted by prompt length and cut
into `batch_size`-row calls of the batched sampler (little padding; the samples of one input sit
together and share one prefill), one model load per stage. `batch_size: auto` takes the most rows
whose KV cache and sampler buffers fit in the device's free memory. On CUDA (`decode: auto`) each
batch decodes through `lib.sampling.StaticDecoder` with a CUDA-graphed step, one decoder per
(rows, width bucket, budget) shape, reused while consecutive batches share it; on the CPU through
the eager `sample`, as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from lib.chat import chat_prompt_ids, chat_prompt_text, has_chat_template
from lib.config import param
from lib.distributed import Dist
from lib.prompts import (
    PromptParams,
    Templates,
    choose_few_shot,
    extract_code_body,
    few_shot_text,
    fill,
    raw_code_prompt,
    stable_int,
    templates,
    truncate_at_stops,
)
from lib.sampling import Completion, eos_ids, sample
from lib.schemas import GENERATIONS, SYSTEMS
from lib.static_decoder import StaticDecoder

BASE_SYSTEMS = ("zero_shot", "few_shot")
ADAPTER_SYSTEMS = tuple(s for s in SYSTEMS if s not in BASE_SYSTEMS)


@dataclass(frozen=True)
class GenerateParams:
    """`generate:` in params.yaml."""

    num_samples: int = param(ge=1)
    temperature: float = param(ge=0)
    top_p: float = param(gt=0, le=1)
    max_new_tokens: dict[str, int] = param(ge=1)  # per domain
    batch_size: int | Literal["auto"] = param(ge=1)  # (input, sample) rows per sampler call
    few_shot_k: int = param(ge=0)
    decode: Literal["auto", "eager"] = param()  # auto: CUDA-graphed static decoding on a GPU

    def budget(self, domain: str) -> int:
        if domain not in self.max_new_tokens:
            raise ValueError(
                f"generate.max_new_tokens has no entry for domain '{domain}'; "
                f"known: {sorted(self.max_new_tokens)}"
            )
        return int(self.max_new_tokens[domain])


def sample_seed(seed: int, id_: str, sample_idx: int) -> int:
    return stable_int(seed, "generate", id_, sample_idx)


@dataclass(frozen=True)
class Prompt:
    text: str  # exactly what the model is given (chat template included)
    ids: list[int]
    code_mode: str | None  # code domain: "chat" (extract from a fenced block) | "raw"; else None


def _code_meta(meta: str, where: str) -> dict[str, Any]:
    try:
        m = json.loads(meta)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: meta is not a JSON object: {e}") from e
    for key in ("prompt", "test", "entry_point"):
        if not isinstance(m.get(key), str):
            raise ValueError(f"{where}: code meta lacks '{key}'")
    return m


def build_prompts(
    system: str,
    test: pd.DataFrame,
    train: pd.DataFrame | None,
    tokenizer: Any,
    tpl: Templates,
    k: int,
    seed: int,
) -> list[Prompt]:
    """One prompt per test row, in test order."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system '{system}'; known: {list(SYSTEMS)}")
    chat = has_chat_template(tokenizer)
    shots: dict[str, list[tuple[str, str]]] = {}
    if system == "few_shot":
        if train is None:
            raise ValueError("few_shot needs the train split")
        for domain in sorted(test["domain"].unique()):
            shots[domain] = choose_few_shot(train, domain, k, seed, test["input"].tolist())
    out = []
    for row, (domain, inp) in enumerate(zip(test["domain"], test["input"], strict=True)):
        inp = str(inp)
        if system in ADAPTER_SYSTEMS:
            user = inp
        elif domain == "code" and not chat:
            # A base model continues the HumanEval prompt itself (raw continuation).
            text = raw_code_prompt(shots.get(domain, []), inp)
            ids = list(tokenizer(text)["input_ids"])
            out.append(Prompt(text, ids, "raw"))
            continue
        elif system == "zero_shot":
            user = fill(tpl.get("zero_shot", domain), input=inp)
        else:
            user = few_shot_text(tpl, domain, shots[domain], inp)
        ids = chat_prompt_ids(tokenizer, user)
        if not ids:
            raise ValueError(f"test row {row}: prompt renders to zero tokens")
        mode = ("chat" if chat else "raw") if domain == "code" else None
        out.append(Prompt(chat_prompt_text(tokenizer, user), ids, mode))
    return out


def postprocess(text: str, prompt: Prompt, meta: str, where: str) -> str:
    if prompt.code_mode is None:
        return text.strip()
    if prompt.code_mode == "raw":
        return truncate_at_stops(text)
    return extract_code_body(text, _code_meta(meta, where)["entry_point"])


@dataclass(frozen=True)
class Job:
    row: int  # test row
    sample: int
    seed: int
    budget: int


def plan(
    test: pd.DataFrame,
    prompts: list[Prompt],
    p: GenerateParams,
    seed: int,
    rows_that_fit: Callable[[int, int], int] | None = None,
    rows: Sequence[int] | None = None,
) -> list[list[Job]]:
    """Sampler calls: rows grouped by token budget, sorted by prompt length, `batch_size` each.

    With `batch_size: auto`, `rows_that_fit(width, budget)` sizes each budget's batches for its
    longest prompt. `rows`: only those test rows (this rank's share), else all.
    """
    jobs = [
        Job(
            r,
            s,
            sample_seed(seed, str(test["id"].iloc[r]), s),
            p.budget(str(test["domain"].iloc[r])),
        )
        for r in (range(len(test)) if rows is None else rows)
        for s in range(p.num_samples)
    ]
    # Longest first: an out-of-memory batch fails at once, not at the end of the run.
    jobs.sort(key=lambda j: (j.budget, -len(prompts[j.row].ids), j.row, j.sample))
    batches: list[list[Job]] = []
    size = 0
    for j in jobs:
        if batches and len(batches[-1]) < size and batches[-1][0].budget == j.budget:
            batches[-1].append(j)
            continue
        if not batches or batches[-1][0].budget != j.budget:  # a new budget's longest prompt
            if p.batch_size != "auto":
                size = p.batch_size
            elif rows_that_fit is None:
                raise ValueError("generate.batch_size auto needs the device's free memory")
            else:
                size = max(1, rows_that_fit(len(prompts[j.row].ids), j.budget))
        batches.append([j])
    return batches


def shard_rows(
    test: pd.DataFrame, prompts: list[Prompt], p: GenerateParams, dist: Dist
) -> list[int]:
    """This rank's test rows: every world-th in `plan`'s order (budget, longest prompt first).
    Fixed by the inputs alone, never by a rank's free memory, so the shares always partition."""
    order = sorted(
        range(len(test)),
        key=lambda r: (p.budget(str(test["domain"].iloc[r])), -len(prompts[r].ids), r),
    )
    return sorted(order[dist.rank :: dist.world])


_WIDTH_BUCKET = 64  # graphed batches pad prompts up to a multiple of this: fewer distinct shapes


class BatchSampler:
    """How the stage samples a batch: the eager `sample`, or a CUDA-graphed `StaticDecoder`.

    One decoder per (rows, width bucket, budget), kept while consecutive batches share that shape
    (`plan` sorts by length, so they mostly do) and dropped before the next is built.
    """

    def __init__(self, model: torch.nn.Module, decode: str) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.graphed = decode == "auto" and self.device.type == "cuda"
        self._key: tuple[int, int, int] | None = None
        self._decoder: StaticDecoder | None = None

    def rows_that_fit(self, width: int, budget: int) -> int:
        """Most rows whose KV cache and sampler buffers fit in 90% of the free memory."""
        config = getattr(self.model, "config", None)
        if self.graphed:
            width = -(-width // _WIDTH_BUCKET) * _WIDTH_BUCKET
        per_row = StaticDecoder.bytes_per_row(config, width, budget)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(
                self.device
            )
        else:
            import psutil

            free = psutil.virtual_memory().available
        return int(0.9 * free) // per_row

    def __call__(
        self, prompts: list[list[int]], seeds: list[int], budget: int, **draw: Any
    ) -> list[Completion]:
        if not self.graphed:
            return sample(self.model, prompts, seeds, max_new_tokens=budget, **draw)
        width = -(-max(map(len, prompts)) // _WIDTH_BUCKET) * _WIDTH_BUCKET
        key = (len(prompts), width, budget)
        if key != self._key:
            self._decoder = None  # free the last shape's cache and graph before the next
            self._decoder = StaticDecoder(self.model, *key, mode="graph")
            self._key = key
        assert self._decoder is not None
        return self._decoder.sample(prompts, seeds, **draw)


def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    system: str,
    test: pd.DataFrame,
    train: pd.DataFrame | None,
    p: GenerateParams,
    prompt_params: PromptParams,
    seed: int,
    *,
    progress: bool = True,
    dist: Dist | None = None,
) -> pd.DataFrame | None:
    """A GENERATIONS frame: `p.num_samples` rows per test row, ordered by (test row, sample).
    With several ranks (`dist`) each samples its `shard_rows`; rank 0 returns the whole frame,
    every other rank None."""
    from tqdm.auto import tqdm

    if test["id"].duplicated().any():
        dup = test["id"][test["id"].duplicated()].iloc[0]
        raise ValueError(f"test split: id '{dup}' appears twice (one row per input expected)")
    tpl = templates(prompt_params)
    prompts = build_prompts(system, test, train, tokenizer, tpl, p.few_shot_k, seed)
    eos = eos_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    dist = dist or Dist()
    mine = shard_rows(test, prompts, p, dist) if dist.world > 1 else None
    results: dict[tuple[int, int], tuple[str, int, str, int]] = {}
    bar = tqdm(
        total=(len(test) if mine is None else len(mine)) * p.num_samples,
        unit="sample",
        disable=not progress or not dist.main,
        desc=f"generate {system}",
    )
    n_tok, t0 = 0, time.perf_counter()
    sampler = BatchSampler(model, p.decode)
    for batch in plan(test, prompts, p, seed, sampler.rows_that_fit, mine):
        comps = sampler(
            [prompts[j.row].ids for j in batch],
            [j.seed for j in batch],
            batch[0].budget,
            eos_token_ids=eos,
            pad_token_id=pad,
            temperature=p.temperature,
            top_p=p.top_p,
        )
        for j, c in zip(batch, comps, strict=True):
            text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
            where = f"test row {j.row} (id {test['id'].iloc[j.row]})"
            out = postprocess(text, prompts[j.row], str(test["meta"].iloc[j.row]), where)
            results[(j.row, j.sample)] = (out, len(c.token_ids), c.finish_reason, c.seed)
            n_tok += len(c.token_ids)
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{n_tok / max(time.perf_counter() - t0, 1e-9):.0f}")
    bar.close()
    parts = dist.gather(results)
    if parts is None:
        return None
    results = {k: v for part in parts for k, v in part.items()}

    rows = []
    for r in range(len(test)):
        src = test.iloc[r]
        refs = src["references"]
        for s in range(p.num_samples):
            out, n, reason, sd = results[(r, s)]
            rows.append(
                {
                    "system": system,
                    "id": str(src["id"]),
                    "sample": s,
                    "domain": str(src["domain"]),
                    "input": str(src["input"]),
                    "reference": None if pd.isna(src["reference"]) else str(src["reference"]),
                    "references": [str(x) for x in (refs if refs is not None else [])],
                    "meta": str(src["meta"]),
                    "prompt": prompts[r].text,
                    "output": out,
                    "n_tokens": n,
                    "finish_reason": reason,
                    "seed": sd,
                }
            )
    return pd.DataFrame(rows, columns=GENERATIONS.columns)


def regenerate_one(
    model: torch.nn.Module, tokenizer: Any, row: Mapping[str, Any], p: GenerateParams
) -> str:
    """Re-run one recorded GENERATIONS row alone from its `prompt` and `seed`; returns its output."""
    ids = _prompt_ids_from_text(tokenizer, str(row["prompt"]))
    eos = eos_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    (c,) = sample(
        model,
        [ids],
        [int(row["seed"])],
        max_new_tokens=p.budget(str(row["domain"])),
        eos_token_ids=eos,
        pad_token_id=pad,
        temperature=p.temperature,
        top_p=p.top_p,
    )
    text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
    domain = str(row["domain"])
    mode = None if domain != "code" else ("chat" if has_chat_template(tokenizer) else "raw")
    return postprocess(text, Prompt(str(row["prompt"]), ids, mode), str(row["meta"]), "row")


def _prompt_ids_from_text(tokenizer: Any, text: str) -> list[int]:
    # The recorded prompt already holds the chat template's special tokens; the plain format
    # got the tokenizer's BOS from `add_special_tokens`, as `chat_prompt_ids` does.
    return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def load_system_model(model_params: Any, adapter: str | None) -> tuple[torch.nn.Module, Any]:
    """Base model (+ LoRA adapter, merged where merging is exact: not on a 4-bit base)."""
    from lib.models import load_model

    model, tokenizer = load_model(model_params)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise FileNotFoundError(
                f"{adapter}: not a PEFT adapter folder (no adapter_config.json)"
            )
        model = PeftModel.from_pretrained(model, adapter)
        if not model_params.load_in_4bit:
            model = model.merge_and_unload()
        model.eval()
    return model, tokenizer
