"""Merge an overrides file (e.g. configs/smoke.yaml) into params.yaml, atomically.

python scripts/use_params.py configs/smoke.yaml [--params params.yaml]
"""

from __future__ import annotations

import argparse

import yaml

from lib.config import deep_merge, read_params
from lib.io import write_text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("overrides")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    merged = deep_merge(read_params(args.params), read_params(args.overrides))
    write_text(yaml.safe_dump(merged, sort_keys=False), args.params)


if __name__ == "__main__":
    main()
