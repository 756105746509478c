"""One run's stage seconds from a GPU lease's logs (`gpu_lease.sh collect`'s logs.gz): the
`h200_stage_times.tsv` that scripts/summary.py reads for its compute columns.

    python scripts/lease_times.py reports/qa_test/lease_logs.gz --exp gpu-s0 \\
        --out reports/qa_test/seed0/h200_stage_times.tsv

collect concatenates every run's log, each ending with DVC's `Ran experiment(s): NAME`; the run
is the stretch before its own line. Train stages: the trainer's `SYSTEM: steps took X s` (the
step loop alone, not the model load); generate stages: the sampling bar's elapsed time at 100 %
(tqdm's whole seconds). Earlier leases' tables were read off the logs by hand, in this format.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.io import write_text  # noqa: E402

_RAN = re.compile(r"Ran experiment\(s\): (.+)$")
_TRAIN = re.compile(r"^(\w+): steps took ([0-9.]+) s\b")
# tqdm's frame: "generate gem: 100%|█████| 1000/1000 [00:06<00:00, ...]" ([h:]mm:ss elapsed)
_GENERATE = re.compile(r"generate (\w+): 100%\|[^|]*\| (\d+)/\2 \[(?:(\d+):)?(\d+):(\d+)<")


def runs(text: str) -> dict[str, list[str]]:
    """experiment name -> the log lines of its run (progress-bar redraws as lines of their own)."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():  # breaks at tqdm's \r redraws too
        current.append(line)
        m = _RAN.search(line)
        if m:
            for name in m.group(1).split(","):
                out[name.strip()] = current
            current = []
    return out


def stage_seconds(lines: list[str]) -> dict[str, float]:
    """{stage: seconds} in the order the stages ran; a generate stage's last 100 % frame."""
    times: dict[str, float] = {}
    for line in lines:
        if m := _TRAIN.match(line):
            times[f"train_{m.group(1)}"] = float(m.group(2))
        elif m := _GENERATE.search(line):
            h, mm, ss = (int(g or 0) for g in m.group(3, 4, 5))
            times[f"generate@{m.group(1)}"] = float(3600 * h + 60 * mm + ss)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="collect's logs.gz (or a plain log)")
    ap.add_argument("--exp", required=True, help="the run's experiment name")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raw = args.log.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8", "replace")
    found = runs(text)
    if args.exp not in found:
        raise SystemExit(
            f"lease_times: {args.log}: no run of {args.exp} ended (ran: {sorted(found)})"
        )
    times = stage_seconds(found[args.exp])
    if not times:
        raise SystemExit(
            f"lease_times: {args.log}: {args.exp}'s log has no train or generate times"
        )
    rows = "".join(f"{stage}\t{s:.1f}\n" for stage, s in times.items())
    write_text("stage\tseconds\n" + rows, args.out)
    print(f"lease_times: {args.exp}: {len(times)} stages -> {args.out}")


if __name__ == "__main__":
    main()
