"""Stage errors: a project error is one line plus a log path, exit 1; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from lib.config import merged_params

ROOT = Path(__file__).resolve().parents[1]


def _stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_empty_jsonl_is_one_line_naming_the_file_and_a_log(tmp_path):
    empty = tmp_path / "mine.jsonl"
    empty.write_text("\n")
    params = merged_params({"data": {"domain": "jsonl", "jsonl_path": str(empty)}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = _stage(["-m", "stages.prepare", "--out", "p.parquet", "--report", "r.json"], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"prepare: error: data.jsonl_path: {empty} is empty (no lines with a JSON object) "
        "(traceback: .cache/logs/prepare.log)"
    ]
    log = (tmp_path / ".cache/logs/prepare.log").read_text()
    assert "Traceback (most recent call last)" in log and "DataError" in log
    assert not (tmp_path / "p.parquet").exists()


def test_model_id_offline_is_one_line_from_the_generate_stage(tmp_path):
    params = merged_params({"model": {"base": "Qwen/Qwen3-8B", "device": "cpu"}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--system", "zero_shot", "--test", "t.parquet", "--train", "t.parquet"]
    out = _stage(
        ["-m", "stages.generate", *args, "--adapter", "none", "--out", "g.parquet"], tmp_path
    )
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("generate@zero_shot: error: model.base = 'Qwen/Qwen3-8B': ")
    assert "needs network once, or set model.base to a local path" in line


def test_unexpected_exception_keeps_its_traceback(tmp_path):
    code = "from lib.cli import run\ndef main():\n    raise KeyError('bug')\nrun(main, 'x')\n"
    out = _stage(["-c", code], tmp_path)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "KeyError: 'bug'" in out.stderr
    assert not (tmp_path / ".cache/logs/x.log").exists()
