"""check_params: every section of params.yaml validated before any other stage does work.

dvc.yaml runs it first (prepare depends on its output), so a typo or an out-of-range value under
`loss` fails here, not after train_baseline and train_gem have trained. Its output lists the
sections checked and is identical for every valid params.yaml, so a valid edit reruns only the
stages that read the edited section.
"""

from __future__ import annotations

import argparse

from lib.cli import run
from lib.config import SECTIONS, validate_all
from lib.io import write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a small JSON written when every section is valid")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    validate_all(args.params)
    write_json({"valid_sections": sorted(SECTIONS)}, args.out)
    print(f"check_params: {args.params}: {len(SECTIONS)} sections valid")


if __name__ == "__main__":
    run(main)
