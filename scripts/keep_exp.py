"""Keep a DVC experiment's record in git: its dvc.lock, params.yaml and metrics, and the small
cached outputs a report needs (the samples), under a folder of reports/.

    python scripts/keep_exp.py test-s0 reports/social_test/seed0 --outs data/generations \\
        --outs data/scores

Experiment refs and the DVC cache live with one checkout and its remote; a folder in git is what
every clone has. The folder gets `dvc.lock`, `params.yaml`, the git-tracked files under `metrics/`
that its dvc.lock lists as outputs (table.md, stats.json, headline/, the training curves; not a
stage_times.tsv some other run left in the tree), and
for each `--outs` prefix the matching outputs of its dvc.lock, copied from the DVC cache (checked
against the lock's md5). It refuses an experiment whose dvc.lock is not one consistent run
(lib.experiments.stale_stages) and writes the folder whole or not at all.

A sweep's experiment runs only up to its val samples and their scores (`dvc exp run ...
generate@polychromic`, then `scripts/score_exps.sh`), so the later stages in its lock are the
base's. `--upto score@polychromic` keeps that stage and the stages it reads from, checks only
those for consistency, and leaves the rest's outputs out:

    python scripts/keep_exp.py val-addi-l10 reports/code_sweep/val-addi-l10 --upto score@polychromic \
        --outs data/generations/polychromic --outs data/scores/polychromic
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

from lib.experiments import exp_show, exp_states, stale_stages  # noqa: E402


def _git(*args: str, binary: bool = False) -> bytes | str:
    p = subprocess.run(["git", *args], check=True, capture_output=True, text=not binary)
    return p.stdout


def rev_of(name: str) -> str:
    """The commit of the experiment called `name` (or `name` itself when it is a revision)."""
    # A full ref (gpu_lease.sh keep passes refs/exps/...) needs no `dvc exp show --all-commits`,
    # which reads every commit's metrics: half a minute and more on this repository's history.
    if name.startswith("refs/"):
        return str(_git("rev-parse", "--verify", f"{name}^{{commit}}")).strip()
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


def upstream(stages: dict, targets: list[str]) -> set[str]:
    """The `targets` stages of a dvc.lock's `stages` and every stage whose outputs they read,
    transitively (a dep at an output's path or under it)."""
    outs = {
        name: [o["path"].rstrip("/") for o in st.get("outs") or []] for name, st in stages.items()
    }

    def feeds(a: str, b: str) -> bool:
        deps = [d["path"] for d in stages[b].get("deps") or []]
        return any(d == o or d.startswith(o + "/") for d in deps for o in outs[a])

    chosen: set[str] = set()
    todo = list(targets)
    while todo:
        b = todo.pop()
        if b in chosen:
            continue
        if b not in stages:
            raise SystemExit(f"keep_exp: --upto {b}: no such stage in the dvc.lock")
        chosen.add(b)
        todo += [a for a in stages if a not in chosen and feeds(a, b)]
    return chosen


def keep(rev: str, out: Path, outs: list[str], upto: list[str] | None = None) -> list[str]:
    lock_text = _git("show", f"{rev}:dvc.lock")
    lock = yaml.safe_load(lock_text)
    stages = lock.get("stages") or {}
    if upto:
        chosen = upstream(stages, upto)
        stages = {k: v for k, v in stages.items() if k in chosen}
    stale = {k: v for k, v in stale_stages(lock).items() if k in stages}
    if stale:
        raise SystemExit(f"keep_exp: {rev[:7]}'s dvc.lock is not one run: stale deps {stale}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "dvc.lock").write_text(lock_text)
        (tmp / "params.yaml").write_text(_git("show", f"{rev}:params.yaml"))
        made = [o["path"] for st in stages.values() for o in st.get("outs") or []]
        for path in _git("ls-tree", "-r", "--name-only", rev, "metrics/").splitlines():
            if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in made):
                continue  # not this run's output (stage_times.tsv of another machine's run, say)
            dst = tmp / path
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(_git("show", f"{rev}:{path}", binary=True))
        kept, cache = [], cache_root()
        for st in stages.values():
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
    ap.add_argument(
        "--upto", action="append", default=[], help="stage: keep it and what it reads, only"
    )
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rev = rev_of(args.exp)
    kept = keep(rev, args.out, args.outs, args.upto)
    print(f"keep_exp: {args.exp} ({rev[:7]}) -> {args.out}: dvc.lock, params.yaml, metrics/, "
          f"{len(kept)} outputs")  # fmt: skip


if __name__ == "__main__":
    main()
