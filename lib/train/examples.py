"""Train examples: tokenised (prompt, reference) pairs with what the rewards read, their order,
their padded batches, and the seeds of their samples."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pandas as pd
import torch

from lib.chat import IGNORE_INDEX, training_example
from lib.seeds import rng_seed, torch_generator


@dataclass(frozen=True)
class Example:
    index: int  # row in the train file: names it in errors and seeds its samples
    input_ids: list[int]
    labels: list[int]
    n_prompt: int  # leading prompt tokens of input_ids
    reference: str
    domain: str
    meta: Mapping[str, Any]  # the row's parsed `meta` JSON (code: tests, entry_point, setup, ...)
    references: tuple[str, ...]  # every train reference of the same input, this one included

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.n_prompt]

    @property
    def target_ids(self) -> list[int]:
        return self.input_ids[self.n_prompt :]


@dataclass
class DataReport:
    rows: int = 0
    used: int = 0
    skipped_null_reference: int = 0
    truncated: int = 0


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _meta(raw: Any, where: str) -> Mapping[str, Any]:
    try:
        meta = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: meta is not JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: meta must be a JSON object, got {type(meta).__name__}")
    return MappingProxyType(meta)


def build_examples(
    df: pd.DataFrame, tokenizer: Any, max_length: int, where: str = "train"
) -> tuple[list[Example], DataReport]:
    """Tokenise train rows (schema EXAMPLES: input → reference); rows with a null reference are
    skipped and counted. `references` groups the rows' references by identical `input`."""
    report = DataReport(rows=len(df))
    by_input: dict[str, list[str]] = {}
    for inp, ref in zip(df["input"], df["reference"], strict=True):
        if not _missing(ref):
            by_input.setdefault(str(inp), []).append(str(ref))
    out = []
    rows = zip(df["input"], df["reference"], df["domain"], df["meta"], strict=True)
    for row, (inp, ref, domain, meta) in enumerate(rows):
        if _missing(ref):
            report.skipped_null_reference += 1
            continue
        try:
            ids, labels = training_example(tokenizer, str(inp), str(ref), max_length)
            full, _ = training_example(tokenizer, str(inp), str(ref), None)
        except ValueError as e:
            raise ValueError(f"{where}: row {row}: {e}") from e
        report.truncated += len(full) > len(ids)
        n_prompt = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        out.append(
            Example(
                index=row,
                input_ids=ids,
                labels=labels,
                n_prompt=n_prompt,
                reference=str(ref),
                domain=str(domain),
                meta=_meta(meta, f"{where}: row {row}"),
                references=tuple(by_input[str(inp)]),
            )
        )
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
    """Seed of sample i of `example` at optimizer step `step`: independent of batch and rank layout."""
    return rng_seed(seed, "train-sample", step, example, i)


class DataOrder:
    """Example positions for a cursor (examples consumed so far): a fresh permutation each epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch_generator(self.seed, "train-order", epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g).tolist()
        return self._perms[epoch]

    def take(self, cursor: int, count: int) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in range(cursor, cursor + count)]
