"""Domain adapters: each yields RawPair (or BadRow) records from one source, in a stable order."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from lib.data import BadRow, DataParams, RawPair
from lib.domains import code, creative, jsonl, qa, social

Adapter = Callable[[DataParams], Iterator[RawPair | BadRow]]

ADAPTERS: dict[str, Adapter] = {
    "social": social.load,
    "code": code.load,
    "qa": qa.load,
    "creative": creative.load,
    "jsonl": jsonl.load,
}

# Domains whose rows carry no reference (diversity and judge only).
NO_REFERENCE = frozenset({"creative"})
# Benchmarks kept whole and verbatim (no length filter, dedup or cap; code's adapter caps MBPP itself).
CURATED = frozenset({"code"})


def load_domain(p: DataParams) -> Iterator[RawPair | BadRow]:
    try:
        adapter = ADAPTERS[p.domain]
    except KeyError:
        raise ValueError(
            f"data.domain: unknown domain '{p.domain}'; known: {sorted(ADAPTERS)}"
        ) from None
    return adapter(p)
