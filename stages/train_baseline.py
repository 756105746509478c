"""Stage train_baseline: LoRA adapter for the 'baseline' system (reads params: seed, model, lora, train). See stages/train.py."""

from __future__ import annotations

from lib.cli import run
from stages.train import main as _main


def main(argv: list[str] | None = None) -> None:
    _main(argv, system="baseline")


if __name__ == "__main__":
    run(main)
