"""Raw pairs → filtered, validated, deduplicated pairs (stage prepare; the splits: lib/split.py).

Each step is a pure function of its inputs and params so it can be tested alone. Every dropped row
is counted by reason; the counts become `metrics/data.json`.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from lib.config import ParamsError, param


@dataclass(frozen=True)
class DataParams:
    """`data:` in params.yaml (the values and their meaning live there)."""

    domain: Literal["social", "code", "qa", "creative", "jsonl"] = param()
    jsonl_path: str = param()  # a dvc.yaml dep of prepare: always names a real file
    max_bad_fraction: float = param(ge=0, le=1)
    min_input_chars: int = param(ge=0)
    max_input_chars: int = param(ge=1)
    min_reference_chars: int = param(ge=0)
    max_reference_chars: int = param(ge=1)
    near_dup_jaccard: float = param(gt=0, le=1)
    max_pairs: int = param(ge=1)

    def __post_init__(self) -> None:
        for what in ("input", "reference"):
            lo, hi = getattr(self, f"min_{what}_chars"), getattr(self, f"max_{what}_chars")
            if lo > hi:
                raise ParamsError(
                    f"min_{what}_chars = {lo} > data.max_{what}_chars = {hi}: need min <= max"
                )


@dataclass(frozen=True)
class RawPair:
    input: Any
    reference: Any
    source: str  # "file:line" — named in every error and bad-row report
    meta: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # a natural id (HumanEval task_id); else derived from the content


@dataclass(frozen=True)
class BadRow:
    source: str
    reason: str


@dataclass(frozen=True)
class Dropped:
    """A well-formed row the adapter leaves out on purpose (e.g. an MBPP reference that fails its
    own tests): counted in `dropped_by_reason`, not in the malformed-row budget."""

    source: str
    reason: str


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and line."""


# ---------------------------------------------------------------- normalisation and validation

_WS = re.compile(r"\s+")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_PUNCT = re.compile(rf"[{re.escape(string.punctuation)}“”‘’«»…—–]")


def clean_text(text: str) -> str:
    """NFC, control characters removed, whitespace collapsed: how text is stored."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return _WS.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """Case, punctuation and spacing folded: two texts with the same key are duplicates."""
    return _WS.sub(" ", _PUNCT.sub(" ", text.casefold())).strip()


def validate(raw: RawPair, *, reference_required: bool) -> BadRow | tuple[str, str | None]:
    """Type and encoding checks; a bad row is reported with its file:line, never a crash."""
    if not isinstance(raw.input, str):
        return BadRow(raw.source, f"input is {type(raw.input).__name__}, expected a string")
    if raw.reference is None and not reference_required:
        ref = None
    elif not isinstance(raw.reference, str):
        return BadRow(raw.source, f"output is {type(raw.reference).__name__}, expected a string")
    else:
        ref = raw.reference
    for name, value in (("input", raw.input), ("output", ref)):
        if value is not None and "\x00" in value:
            return BadRow(raw.source, f"{name} contains a NUL byte")
        if value is not None and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            return BadRow(raw.source, f"{name} contains an unpaired surrogate (bad encoding)")
    return raw.input, ref


def filter_reason(inp: str, ref: str | None, p: DataParams) -> str | None:
    """Why a cleaned pair is dropped, or None to keep it."""
    if not inp:
        return "empty_input"
    if _URL.sub("", inp).strip() == "":
        return "url_only_input"
    if not any(ch.isalnum() for ch in inp):
        return "non_text_input"
    if len(inp) < p.min_input_chars:
        return "input_too_short"
    if len(inp) > p.max_input_chars:
        return "input_too_long"
    if ref is None:
        return None
    if not ref:
        return "empty_reference"
    if _URL.sub("", ref).strip() == "":
        return "url_only_reference"
    if not any(ch.isalnum() for ch in ref):
        return "non_text_reference"
    if len(ref) < p.min_reference_chars:
        return "reference_too_short"
    if len(ref) > p.max_reference_chars:
        return "reference_too_long"
    return None


# ---------------------------------------------------------------- near-duplicate grouping


def shingles(text: str, n: int = 3) -> set[str]:
    words = dedup_key(text).split()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


_MERSENNE = (1 << 61) - 1


def near_duplicate_groups(
    texts: Sequence[str], threshold: float, *, num_perm: int = 64, bands: int = 16
) -> list[int]:
    """Cluster ids such that texts whose word-3-shingle Jaccard ≥ threshold share a cluster.

    Exact duplicates (same `dedup_key`) are merged first; MinHash LSH proposes candidate pairs among
    the distinct keys and each candidate is confirmed by its exact Jaccard, then union-find.
    Cluster ids are the index of the cluster's first text, so they are deterministic.
    """
    keys = [dedup_key(t) for t in texts]
    first_of: dict[str, int] = {}
    for i, k in enumerate(keys):
        first_of.setdefault(k, i)
    reps = sorted(set(first_of.values()))
    parent = {r: r for r in reps}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if threshold <= 1.0 and len(reps) > 1:
        rng = np.random.default_rng(0x5EED)
        a = rng.integers(1, _MERSENNE, size=num_perm, dtype=np.uint64)
        b = rng.integers(0, _MERSENNE, size=num_perm, dtype=np.uint64)
        sh = {r: shingles(texts[r]) for r in reps}
        rows = num_perm // bands
        buckets: dict[tuple[int, bytes], list[int]] = {}
        for r in reps:
            h = np.fromiter((zlib.crc32(s.encode()) for s in sh[r]), dtype=np.uint64)
            # (a·h + b) mod p on uint64 wraps; good enough as a hash family for LSH proposals.
            sig = ((np.outer(h, a) + b) % _MERSENNE).min(axis=0)
            for band in range(bands):
                key = (band, sig[band * rows : (band + 1) * rows].tobytes())
                buckets.setdefault(key, []).append(r)
        for members in buckets.values():
            for i in range(1, len(members)):
                x, y = members[0], members[i]
                if find(x) != find(y) and jaccard(sh[x], sh[y]) >= threshold:
                    parent[find(y)] = find(x)
            # Pairs not through the first member are also candidates; check them in small buckets.
            if 2 < len(members) <= 50:
                for i in range(1, len(members)):
                    for j in range(i + 1, len(members)):
                        x, y = members[i], members[j]
                        if find(x) != find(y) and jaccard(sh[x], sh[y]) >= threshold:
                            parent[find(y)] = find(x)
    root_min: dict[int, int] = {}
    for r in reps:
        root = find(r)
        root_min[root] = min(root_min.get(root, r), r)
    return [root_min[find(first_of[k])] for k in keys]


# ---------------------------------------------------------------- the whole prepare step


def stable_id(domain: str, *parts: str | None) -> str:
    h = hashlib.sha1("\x1f".join(p or "" for p in parts).encode("utf-8")).hexdigest()[:16]
    return f"{domain}-{h}"


def prepare_pairs(
    raws: Iterable[RawPair | BadRow | Dropped],
    p: DataParams,
    seed: int,
    *,
    reference_required: bool = True,
    curated: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Validate, clean, filter, dedup, cap and group. Returns (pairs frame, report).

    `curated` sources (a benchmark such as HumanEval) are validated but never length-filtered,
    deduplicated or capped: dropping a benchmark problem would change the benchmark.
    """
    bad: list[BadRow] = []
    dropped: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    seen_ids: set[str] = set()
    total = 0
    for raw in raws:
        total += 1
        if isinstance(raw, BadRow):
            bad.append(raw)
            continue
        if isinstance(raw, Dropped):
            dropped[raw.reason] += 1
            continue
        checked = validate(raw, reference_required=reference_required)
        if isinstance(checked, BadRow):
            bad.append(checked)
            continue
        if curated:  # code keeps its exact text: whitespace is syntax
            inp, ref = checked
        else:
            inp = clean_text(checked[0])
            ref = None if checked[1] is None else clean_text(checked[1])
            reason = filter_reason(inp, ref, p)
            if reason:
                dropped[reason] += 1
                continue
        key = (dedup_key(inp), dedup_key(ref) if ref is not None else "")
        if not curated and key in seen:
            dropped["duplicate_pair"] += 1
            continue
        seen.add(key)
        rid = raw.id or stable_id(p.domain, inp, ref)
        if rid in seen_ids:
            bad.append(BadRow(raw.source, f"duplicate id '{rid}'"))
            continue
        seen_ids.add(rid)
        kept.append({"id": rid, "input": inp, "reference": ref, "meta": raw.meta})

    if total and len(bad) / total > p.max_bad_fraction:
        shown = "; ".join(f"{b.source}: {b.reason}" for b in bad[:5])
        raise DataError(
            f"{len(bad)} of {total} rows are malformed ({len(bad) / total:.1%} > "
            f"data.max_bad_fraction={p.max_bad_fraction}); nothing was written. First: {shown}"
        )
    if not kept:
        src = f" in {p.jsonl_path}" if p.domain == "jsonl" else ""
        raise DataError(
            f"no usable rows for domain '{p.domain}'{src} ({total} read, {len(bad)} bad, "
            f"{sum(dropped.values())} filtered: {dict(dropped)})"
        )

    capped = 0
    if len(kept) > p.max_pairs and not curated:
        rng = np.random.default_rng(seed)
        keep_idx = np.sort(rng.choice(len(kept), size=p.max_pairs, replace=False))
        capped = len(kept) - p.max_pairs
        kept = [kept[i] for i in keep_idx]

    inputs = [r["input"] for r in kept]
    clusters = near_duplicate_groups(inputs, p.near_dup_jaccard)
    group_ids = {c: stable_id("g", dedup_key(inputs[c])) for c in set(clusters)}
    df = pd.DataFrame(
        {
            "id": [r["id"] for r in kept],
            "domain": p.domain,
            "input": inputs,
            "reference": [r["reference"] for r in kept],
            "group": [group_ids[c] for c in clusters],
            "meta": [json.dumps(r["meta"], ensure_ascii=False, sort_keys=True) for r in kept],
        }
    )
    report = {
        "domain": p.domain,
        "rows_read": total,
        "rows_kept": len(df),
        "bad_rows": len(bad),
        "bad_row_examples": [f"{b.source}: {b.reason}" for b in bad[:20]],
        "bad_by_reason": dict(Counter(b.reason.split(",")[0] for b in bad)),
        "dropped_by_reason": dict(sorted(dropped.items())),
        "dropped_by_cap": capped,
        "groups": int(df["group"].nunique()),
        # rows an adapter pins to a split (code: by source); split_pairs keeps them there
        "rows_by_fixed_split": dict(sorted(Counter(fixed_splits(df)).items())),
        # distinct inputs merged into another input's group by near-duplicate matching
        "near_duplicate_inputs_grouped": int(
            df["input"].map(dedup_key).nunique() - df["group"].nunique()
        ),
    }
    return df, report


SPLITS = ("train", "val", "test")


def fixed_splits(pairs: pd.DataFrame) -> list[str]:
    """Each row's `meta["split"]` where an adapter fixed it (all rows or none), else []."""
    fixed = [json.loads(m).get("split") for m in pairs["meta"]]
    if all(f is None for f in fixed):
        return []
    bad = [(i, f) for i, f in enumerate(fixed) if f not in SPLITS]
    if bad:
        i, f = bad[0]
        raise ValueError(
            f"row {i} (id {pairs['id'].iloc[i]}): meta split {f!r} is not one of {SPLITS} "
            "(an adapter fixes the split of every row or of none)"
        )
    return fixed
