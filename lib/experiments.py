"""Reading DVC experiments for the report scripts (scripts/pareto.py, select_sweep.py, seeds.py):
`dvc exp show --json`, the `--where KEY=VALUE` params filter, and whether an experiment's
dvc.lock describes one consistent run.

An experiment commit holds the lock of its base for the stages it did not run, so a stage left out
of the run (stats after new scores, say) keeps outputs that belong to other inputs; reading them
would report a stale result as this run's. A lock is one consistent run when every dep that
another stage produces carries that stage's recorded output hash.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def exp_show(saved: Path | None, revs: Sequence[str] = ()) -> list:
    """`dvc exp show --json [revs]` (e.g. `--all-commits`, `--rev X`), or a saved copy of it."""
    if saved is not None:
        return json.loads(saved.read_text(encoding="utf-8"))
    cmd = ["dvc", "exp", "show", "--json", *revs]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def where_params(items: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` filters, each value read as YAML (so `loss.lambda=0.3` compares as a number)."""
    return {k: yaml.safe_load(v) for k, v in (w.split("=", 1) for w in items)}


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


def stale_at(rev: str) -> dict[str, list[str]]:
    """`stale_stages` of the dvc.lock committed at `rev` (a commit of this repository)."""
    cmd = ["git", "show", f"{rev}:dvc.lock"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return stale_stages(yaml.safe_load(text) or {})
