"""A scratch copy of the repo (its own git and DVC state) for end-to-end `dvc` runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def scratch_repo(dest: Path, overrides: str | None = "configs/smoke.yaml") -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("metrics/", "plots/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    (dest / "dvc.lock").unlink(missing_ok=True)
    if overrides:
        run([sys.executable, "scripts/use_params.py", overrides], dest)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "scratch"], dest)
    return dest


def reproduced_copy(template: tuple[Path, str], dest: Path) -> tuple[Path, str]:
    """A copy of a reproduced scratch repo (`smoke_repro`'s) at `dest`, with its outputs, DVC
    cache and git history, and the `dvc repro` output that made it: a module that mutates its
    repo gets its own without paying the repro again (two modules each ran it: ~2.4 min)."""
    root, out = template
    shutil.copytree(root, dest, symlinks=True)
    return dest, out


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of pipeline runs: offline, no API key unless `extra` sets one."""
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e['PATH']}"
    e["HF_HUB_OFFLINE"] = "1"
    e.pop("ANTHROPIC_API_KEY", None)
    e.update(extra or {})
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 1200) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out.stdout + out.stderr


def dvc(args: list[str], cwd: Path) -> str:
    return run([str(VENV_BIN / "dvc"), *args], cwd)


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))
