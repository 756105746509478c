"""Defaults quoted in the docs are params.yaml's (the only place a default lives)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _param(dotted: str):
    node = PARAMS
    for part in dotted.split("."):
        node = node[part]
    return node


def readme_defaults() -> list[tuple[str, object]]:
    """(key, quoted value) of each row of README's params table, e.g.
    "| `generate.temperature` / `top_p` | `0.7` / `0.9` |" -> two pairs."""
    out = []
    text = (ROOT / "README.md").read_text()
    table = text.split("| param | default |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines():
        m = re.match(r"^\| (`[^|]+`) \| (`[^|]+`) \|", line)
        if not m:
            continue
        keys = re.findall(r"`([^`]+)`", m.group(1))
        values = re.findall(r"`([^`]+)`", m.group(2))
        section = keys[0].rpartition(".")[0]
        for k, v in zip(keys, values, strict=True):
            out.append((k if "." in k or not section else f"{section}.{k}", yaml.safe_load(v)))
    return out


def test_readme_params_table_quotes_params_yaml():
    rows = readme_defaults()
    assert len(rows) >= 10, "README's params table was not found"
    wrong = [(k, v, _param(k)) for k, v in rows if _param(k) != v]
    assert not wrong, f"README quotes stale defaults (key, quoted, params.yaml): {wrong}"


def test_docs_quote_the_lambda_default():
    lam = _param("loss.lambda")
    for doc in ("README.md", "docs/training.md"):
        for m in re.finditer(r"λ = ([0-9.]+) \(default\)", (ROOT / doc).read_text()):
            assert float(m.group(1)) == lam, f"{doc} quotes λ = {m.group(1)} as the default"
