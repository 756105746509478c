"""Stage train_gem: LoRA adapter for the 'gem' system (reads params: seed, model, lora, train, gem). See stages/train.py."""

from __future__ import annotations

from lib.cli import run
from stages.train import main as _main


def main(argv: list[str] | None = None) -> None:
    _main(argv, system="gem")


if __name__ == "__main__":
    run(main)
