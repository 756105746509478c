"""`qa`: question → answer pairs from chatterbot-corpus (trivia and the other English categories).

Each YAML conversation is a list of statements; consecutive statements form a pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from lib.data import BadRow, DataParams, RawPair


def corpus_dir() -> Path:
    try:
        import chatterbot_corpus
    except ImportError as e:
        raise RuntimeError("chatterbot-corpus is not installed; run scripts/setup.sh") from e
    return Path(chatterbot_corpus.__file__).with_name("data") / "english"


def load(p: DataParams, directory: Path | None = None) -> Iterator[RawPair | BadRow]:
    directory = directory or corpus_dir()
    for path in sorted(directory.glob("*.yml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            yield BadRow(str(path), f"unreadable YAML ({e})")
            continue
        category = path.stem
        for n, conv in enumerate(doc.get("conversations") or []):
            src = f"{path}:conversation {n + 1}"
            if not isinstance(conv, list):
                yield BadRow(src, "conversation is not a list")
                continue
            for t in range(len(conv) - 1):
                yield RawPair(conv[t], conv[t + 1], src, {"category": category})
