"""Whether a dvc.lock describes one consistent run: every dep that another stage produces carries
that stage's recorded output hash. An experiment commit holds the lock of its base for the stages
it did not run, so a stage left out of the run (stats after new scores, say) keeps metrics that
belong to other inputs; reading them would report a stale result as this run's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _hash(entry: Mapping[str, Any]) -> str | None:
    return entry.get("md5") or entry.get("etag") or entry.get("checksum")


def stale_stages(lock: Mapping[str, Any]) -> dict[str, list[str]]:
    """stage -> its deps whose hash differs from what the producing stage wrote (empty: none)."""
    stages = lock.get("stages") or {}
    made = {o["path"]: _hash(o) for st in stages.values() for o in st.get("outs") or []}
    out: dict[str, list[str]] = {}
    for name, st in stages.items():
        bad = [
            d["path"]
            for d in st.get("deps") or []
            if d["path"] in made and _hash(d) != made[d["path"]]
        ]
        if bad:
            out[name] = bad
    return out
