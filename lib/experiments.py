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


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys: {"loss": {"lambda": 3}} → {"loss.lambda": 3}."""
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def lookup(d: Mapping[str, Any], key: str) -> Any:
    """Value at dotted `key`, or at the one flattened key ending in `.key`; None if absent.

    Lets the Pareto script read `semantic_diversity` whether metrics/polychromic.json is flat or
    nests it (e.g. under `mean`). Two different matches raise ValueError rather than guess.
    """
    flat = flatten(d)
    if key in flat:
        return flat[key]
    if f"mean.{key}" in flat:  # the score stage's layout: `mean` beside `n_prompts_with` counts
        return flat[f"mean.{key}"]
    hits = {k: v for k, v in flat.items() if k.endswith("." + key)}
    if len(hits) > 1:
        raise ValueError(f"'{key}' is ambiguous: matches {sorted(hits)}")
    return next(iter(hits.values()), None)


def exp_states(rows: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """Every state of `dvc exp show --json` (baselines and their experiments), depth first."""
    # [ExpState{rev, name, data, error, experiments: [ExpRange{revs}]}]
    for state in rows:
        yield state
        for rng in state.get("experiments") or []:
            yield from exp_states(rng.get("revs") or [])
