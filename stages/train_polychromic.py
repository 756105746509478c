"""Stage train_polychromic: LoRA adapter for the 'polychromic' system (reads params: seed, model, lora, train, loss). See stages/train.py."""

from __future__ import annotations

from lib.cli import run
from stages.train import main as _main


def main(argv: list[str] | None = None) -> None:
    _main(argv, system="polychromic")


if __name__ == "__main__":
    run(main)
