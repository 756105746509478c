"""Keep a DVC experiment's record in git: its dvc.lock, params.yaml and metrics, and the small
cached outputs a report needs (the samples), under a folder of reports/.

    python scripts/keep_exp.py test-s0 reports/social_test/seed0 --outs data/generations

Experiment refs and the DVC cache live with one checkout and its remote; a folder in git is what
every clone has. The folder gets `dvc.lock`, `params.yaml`, the git-tracked files under `metrics/`
that its dvc.lock lists as outputs (table.md, stats.json, headline/, the training curves; not a
stage_times.tsv some other run left in the tree), and
for each `--outs` prefix the matching outputs of its dvc.lock, copied from the DVC cache (checked
against the lock's md5). It refuses an experiment whose dvc.lock is not one consistent run
(lib.experiments.stale_at) and writes the folder whole or not at all.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.experiments import exp_show, exp_states, stale_at  # noqa: E402


def _git(*args: str, binary: bool = False) -> bytes | str:
    p = subprocess.run(["git", *args], check=True, capture_output=True, text=not binary)
    return p.stdout


def rev_of(name: str) -> str:
    """The commit of the experiment called `name` (or `name` itself when it is a revision)."""
    for st in exp_states(exp_show(None, ["--all-commits"])):
        if st.get("name") == name:
            return str(st["rev"])
    p = subprocess.run(["git", "rev-parse", "--verify", f"{name}^{{commit}}"], capture_output=True)
    if p.returncode == 0:
        return name
    raise SystemExit(f"keep_exp: no experiment or revision called '{name}' (dvc exp list -A)")


def cache_root() -> Path:
    """This checkout's DVC cache folder of md5-addressed files (`dvc cache dir`)."""
    out = subprocess.run(["dvc", "cache", "dir"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip()) / "files" / "md5"


def keep(rev: str, out: Path, outs: list[str]) -> list[str]:
    stale = stale_at(rev)
    if stale:
        raise SystemExit(f"keep_exp: {rev[:7]}'s dvc.lock is not one run: stale deps {stale}")
    lock_text = _git("show", f"{rev}:dvc.lock")
    lock = yaml.safe_load(lock_text)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "dvc.lock").write_text(lock_text)
        (tmp / "params.yaml").write_text(_git("show", f"{rev}:params.yaml"))
        made = [
            o["path"] for st in (lock.get("stages") or {}).values() for o in st.get("outs") or []
        ]
        for path in _git("ls-tree", "-r", "--name-only", rev, "metrics/").splitlines():
            if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in made):
                continue  # not this run's output (stage_times.tsv of another machine's run, say)
            dst = tmp / path
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(_git("show", f"{rev}:{path}", binary=True))
        kept, cache = [], cache_root()
        for st in (lock.get("stages") or {}).values():
            for o in st.get("outs") or []:
                if not any(o["path"].startswith(p) for p in outs) or o["md5"].endswith(".dir"):
                    continue
                src = cache / o["md5"][:2] / o["md5"][2:]
                if not src.exists():
                    raise SystemExit(f"keep_exp: {o['path']} ({o['md5']}) is not in the DVC cache")
                if hashlib.md5(src.read_bytes()).hexdigest() != o["md5"]:
                    raise SystemExit(f"keep_exp: {src} does not match its md5 {o['md5']}")
                dst = tmp / o["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                kept.append(o["path"])
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return kept
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp", help="experiment name (dvc exp list -A) or git revision")
    ap.add_argument("out", type=Path, help="folder to write (replaced whole)")
    ap.add_argument("--outs", action="append", default=[], help="path prefix of outputs to copy")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rev = rev_of(args.exp)
    kept = keep(rev, args.out, args.outs)
    print(f"keep_exp: {args.exp} ({rev[:7]}) -> {args.out}: dvc.lock, params.yaml, metrics/, "
          f"{len(kept)} outputs")  # fmt: skip


if __name__ == "__main__":
    main()
