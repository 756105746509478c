"""Every (stage, Parquet input) pair of the pipeline, runnable in-process on tiny valid inputs.

`build(case, root)` writes valid inputs for the stage under `root` and returns the argv of
`stages.<stage>.main` plus the path of the input under test; tests then replace that one input
with a drifted copy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lib.config import deep_merge, read_params
from lib.schemas import EXAMPLES, GENERATIONS, JUDGMENTS, PAIRS, SCORES, SYSTEMS, Schema
from tests.reliability import artefacts as A

ROOT = Path(__file__).resolve().parents[2]


def smoke_params(dest: Path) -> Path:
    """params.yaml merged with configs/smoke.yaml (tiny-random on CPU)."""
    merged = deep_merge(
        read_params(ROOT / "params.yaml"), read_params(ROOT / "configs" / "smoke.yaml")
    )
    merged["model"]["device"] = "cpu"
    merged["judge"]["backend"] = "local"
    # The artefacts here are a handful of rows: these tests are about kills and drift, not size.
    merged["split"]["allow_small"] = True
    dest.write_text(yaml.safe_dump(merged, sort_keys=False))
    return dest


@dataclass(frozen=True)
class Case:
    stage: str  # module under stages/
    input: str  # which input is drifted
    schema: Schema
    build: Callable[[Path, Path], tuple[list[str], Path, list[Path]]]
    # build(root, params) -> (argv, path of the input under test, outputs that must not appear)

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.input}"

    def main(self) -> Callable[[list[str]], object]:
        return importlib.import_module(f"stages.{self.stage}").main


def _split(root: Path, params: Path):
    pairs = A.write_valid(root / "pairs.parquet", PAIRS, A.pairs_frame())
    out, report = root / "split", root / "split.json"
    argv = ["--pairs", str(pairs), "--out", str(out), "--report", str(report)]
    return argv + ["--params", str(params)], pairs, [out, report]


def _train(root: Path, params: Path):
    train = A.write_valid(root / "train.parquet", EXAMPLES, A.examples_frame("train"))
    out, live = root / "models" / "baseline", root / "live"
    argv = ["--system", "baseline", "--train", str(train), "--out", str(out), "--live", str(live)]
    return (
        argv + ["--params", str(params), "--no-progress"],
        train,
        [out, root / "models" / ".ckpt"],
    )


def _generate(which: str):
    def build(root: Path, params: Path):
        test = A.write_valid(root / "test.parquet", EXAMPLES, A.examples_frame("test"))
        train = A.write_valid(root / "train.parquet", EXAMPLES, A.examples_frame("train"))
        out = root / "gens.parquet"
        argv = ["--system", "few_shot", "--test", str(test), "--train", str(train)]
        argv += ["--adapter", "none", "--out", str(out), "--params", str(params), "--no-progress"]
        return argv, test if which == "test" else train, [out]

    return build


def _score(which: str):
    def build(root: Path, params: Path):
        gens = A.write_valid(root / "gens.parquet", GENERATIONS, A.generations_frame("gem"))
        val = A.write_valid(root / "val.parquet", EXAMPLES, A.examples_frame("val"))
        out, metrics = root / "scores.parquet", root / "gem.json"
        argv = ["--system", "gem", "--generations", str(gens), "--val", str(val)]
        argv += ["--out", str(out), "--metrics", str(metrics), "--params", str(params)]
        return argv, gens if which == "generations" else val, [out, metrics]

    return build


def _judge(system: str):
    def build(root: Path, params: Path):
        gdir = root / "generations"
        for s in SYSTEMS:
            A.write_valid(gdir / f"{s}.parquet", GENERATIONS, A.generations_frame(s))
        out, metrics = root / "judge" / "comparisons.parquet", root / "judge.json"
        argv = ["--generations-dir", str(gdir), "--out", str(out), "--metrics", str(metrics)]
        argv += ["--cache-dir", str(root / "cache"), "--params", str(params)]
        argv += ["--pass-out", str(root / "judge" / "pass.parquet")]
        return argv, gdir / f"{system}.parquet", [out, metrics]

    return build


def _stats(which: str):
    def build(root: Path, params: Path):
        sdir = root / "scores"
        for s in SYSTEMS:
            A.write_valid(sdir / f"{s}.parquet", SCORES, A.scores_frame(s))
        judge = A.write_valid(root / "comparisons.parquet", JUDGMENTS, A.judgments_frame())
        out = root / "stats.json"
        argv = ["--scores-dir", str(sdir), "--judge", str(judge), "--out", str(out)]
        argv += ["--table-md", str(root / "t.md"), "--table-tex", str(root / "t.tex")]
        target = judge if which == "judge" else sdir / f"{which}.parquet"
        return argv + ["--params", str(params)], target, [out, root / "t.md", root / "t.tex"]

    return build


CASES = (
    Case("split", "pairs", PAIRS, _split),
    Case("train", "train", EXAMPLES, _train),
    Case("generate", "test", EXAMPLES, _generate("test")),
    Case("generate", "train", EXAMPLES, _generate("train")),
    Case("score", "generations", GENERATIONS, _score("generations")),
    Case("score", "val", EXAMPLES, _score("val")),
    Case("judge", "polychromic", GENERATIONS, _judge("polychromic")),
    Case("judge", "baseline", GENERATIONS, _judge("baseline")),
    Case("stats", "polychromic", SCORES, _stats("polychromic")),
    Case("stats", "judge", JUDGMENTS, _stats("judge")),
)
