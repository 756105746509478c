"""`social`: turn → reply pairs from the chitchat-dataset package (stands in for tweets → replies).

Each conversation opens with one of 36 prompts, answered ~230 times by different people: those
(prompt → first turn) pairs are the human diversity reference. Every later turn → next turn pair is
kept too. A turn is the sender's consecutive messages joined by a space.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lib.data import BadRow, DataParams, RawPair


def dataset_path() -> Path:
    try:
        import chitchat_dataset
    except ImportError as e:
        raise RuntimeError("chitchat-dataset is not installed; run scripts/setup.sh") from e
    return Path(chitchat_dataset.__file__).with_name("dataset.json")


def load(p: DataParams, path: Path | None = None) -> Iterator[RawPair | BadRow]:
    path = path or dataset_path()
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    for conv_id in sorted(data):
        conv = data[conv_id]
        src = f"{path}:{conv_id}"
        try:
            turns = [" ".join(m["text"] for m in turn) for turn in conv["messages"]]
        except (KeyError, TypeError) as e:
            yield BadRow(src, f"malformed conversation ({e!r})")
            continue
        opening = conv.get("prompt")
        if opening and turns:
            yield RawPair(opening, turns[0], f"{src}:opening", {"conversation": conv_id, "turn": 0})
        for t in range(len(turns) - 1):
            yield RawPair(
                turns[t], turns[t + 1], f"{src}:turn{t}", {"conversation": conv_id, "turn": t + 1}
            )
