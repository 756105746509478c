"""scripts/score_exps.sh scores a GPU lease's sweep experiment here, where its adapter is not.

A toy DVC repo with the pipeline's shape: `split` writes data/split/val.parquet, `train` a model
folder, `generate@polychromic` samples from it, `score@polychromic` scores them (one row per val
id, the sum of the sample numbers as a stand-in score). The experiment runs up to its samples
(as `dvc exp run ... generate@polychromic` does on the GPU), its model leaves the DVC cache (the
lease keeps files over 8 MB), and its lock's score entry is the base's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
pytestmark = pytest.mark.skipif(not Path(DVC).exists(), reason="dvc is not installed")
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t", "PATH": f"{Path(DVC).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip

SCRIPTS = {
    "split.py": "import os, pandas as pd\nos.makedirs('data/split', exist_ok=True)\n"
    "pd.DataFrame({'id': ['a', 'b', 'c']}).to_parquet('data/split/val.parquet')\n",
    "train.py": "import os, yaml\nos.makedirs('models/polychromic', exist_ok=True)\n"
    "k = yaml.safe_load(open('params.yaml'))['k']\n"
    "open('models/polychromic/w', 'w').write(str(k))\n",
    "gen.py": "import pandas as pd\nk = int(open('models/polychromic/w').read())\n"
    "v = pd.read_parquet('data/split/val.parquet')\n"
    "v.assign(sample=k).to_parquet('data/generations/polychromic.parquet')\n",
    "score.py": "import pandas as pd\ng = pd.read_parquet('data/generations/polychromic.parquet')\n"
    "g.assign(score=g['sample'] * 10).to_parquet('data/scores/polychromic.parquet')\n",
    "judge.py": "import os, pandas as pd\nos.makedirs('data/judge', exist_ok=True)\n"
    "g = pd.read_parquet('data/generations/polychromic.parquet')\n"
    "g.assign(j=g['sample'] * 100).to_parquet('data/judge/comparisons.parquet')\n",
    "stats.py": "import json, os, pandas as pd\nos.makedirs('metrics', exist_ok=True)\n"
    "s = pd.read_parquet('data/scores/polychromic.parquet')\n"
    "j = pd.read_parquet('data/judge/comparisons.parquet')\n"
    "json.dump({'score': int(s['score'].sum()), 'judge': int(j['j'].iloc[0])},"
    " open('metrics/stats.json', 'w'))\n",
}
STAGES = """\
stages:
  split:
    cmd: python split.py
    deps: [split.py]
    outs: [data/split]
  train:
    cmd: python train.py
    deps: [train.py]
    params: [k]
    outs: [models/polychromic]
  generate:
    foreach: [polychromic]
    do:
      cmd: python gen.py
      deps: [gen.py, models/polychromic, data/split]
      params: [eval_split]
      outs: ["data/generations/${item}.parquet"]
  score:
    foreach: [polychromic]
    do:
      cmd: python score.py
      deps: [score.py, "data/generations/${item}.parquet"]
      outs: ["data/scores/${item}.parquet"]
  judge:
    cmd: python judge.py
    deps: [judge.py, data/generations/polychromic.parquet]
    outs: [data/judge/comparisons.parquet]
  stats:
    cmd: python stats.py
    deps: [stats.py, data/scores/polychromic.parquet, data/judge/comparisons.parquet]
    outs:
      - metrics/stats.json:
          cache: false
"""


def _run(cwd: Path, *cmd: str) -> str:
    # HOME is the test's own: no global git identity (as on CI); the repo sets one.
    p = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{cmd}: {p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p.stdout


def _scores_at(repo: Path, rev: str) -> pd.DataFrame:
    code = (
        "import dvc.api, sys; sys.stdout.buffer.write(dvc.api.read("
        f"'data/scores/polychromic.parquet', rev='{rev}', mode='rb'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=ENV, capture_output=True, check=True
    ).stdout
    return pd.read_parquet(io.BytesIO(out))


def _base(tmp_path: Path, monkeypatch) -> tuple[Path, str]:
    """The toy repo with k = 1 run and committed: (repo, base commit)."""
    monkeypatch.setitem(ENV, "HOME", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "config", "user.name", "t")  # dvc exp commits need an identity in the repo
    _run(repo, "git", "config", "user.email", "t@t")
    _run(repo, DVC, "init", "-q")
    (repo / "params.yaml").write_text("k: 1\neval_split: val\n")
    (repo / "dvc.yaml").write_text(STAGES)
    for name, text in SCRIPTS.items():
        (repo / name).write_text(text)
    for d in ("data/split", "data/generations", "data/scores"):
        (repo / d).mkdir(parents=True, exist_ok=True)
    _run(repo, DVC, "repro", "-q")  # the base: k = 1 scored (score 10 for every id)
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "base")
    return repo, _run(repo, "git", "rev-parse", "HEAD").strip()


def _on_the_gpu(repo: Path, base: str, name: str, k: int, target: str) -> str:
    """`dvc exp run` up to `target` as the lease runs it, then its model dropped from the cache
    (the lease keeps files over 8 MB); returns the experiment's ref."""
    _run(repo, DVC, "exp", "run", "-q", "-n", name, "-S", f"k={k}", target)
    # The workspace back to the base, DVC's outputs too: the import side never had the run's.
    _run(repo, "git", "checkout", "-q", "-f", base)
    _run(repo, DVC, "checkout", "-q", "-f")
    ref = "refs/exps/" + base[:2] + "/" + base[2:] + "/" + name
    lock = _run(repo, "git", "show", f"{ref}:dvc.lock")
    model_md5 = lock.split("path: models/polychromic")[1].split("md5: ")[1].split()[0]
    shutil.rmtree(repo / ".dvc" / "cache" / "files" / "md5" / model_md5[:2])  # not brought back
    return ref


def test_scores_an_experiment_whose_model_stayed_on_the_gpu(tmp_path, monkeypatch):
    repo, base = _base(tmp_path, monkeypatch)
    # On the GPU: the experiment up to its samples; its score entry stays the base's.
    _on_the_gpu(repo, base, "e2", 2, "generate@polychromic")
    assert _scores_at(repo, "e2")["score"].tolist() == [10, 10, 10]  # the base's, stale

    out = _run(repo, "bash", str(ROOT / "scripts" / "score_exps.sh"), base, "e2")
    assert "score_exps: e2 scored (polychromic) and saved" in out
    got = _scores_at(repo, "e2")
    assert got["id"].tolist() == ["a", "b", "c"]
    assert got["score"].tolist() == [20, 20, 20]  # its own samples (k = 2), scored here
    assert _run(repo, "git", "rev-parse", "HEAD").strip() == base  # left on the base


def test_after_runs_the_later_stages_on_the_experiments_own_judge_and_scores(tmp_path, monkeypatch):
    # A test run goes up to `judge` on the GPU (code's test, as social's did); here its samples
    # are scored and `stats` runs on its scores and its judge file, which only the DVC cache
    # holds (the workspace has the base's, k = 1: judge 100, score 30).
    repo, base = _base(tmp_path, monkeypatch)
    ref = _on_the_gpu(repo, base, "e3", 3, "judge")
    env = {**ENV, "AFTER": "stats"}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "score_exps.sh"), base, "e3"], cwd=repo,
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert "score_exps: e3 scored (polychromic), then stats, and saved" in p.stdout
    stats = json.loads(_run(repo, "git", "show", f"{ref}:metrics/stats.json"))
    assert stats == {"score": 90, "judge": 300}  # 3 ids × 30; its own judge file (sample 3)


def test_refuses_a_name_that_is_no_experiment(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(repo, "git", "init", "-q")
    (repo / "f").write_text("x")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "base")
    base = _run(repo, "git", "rev-parse", "HEAD").strip()
    p = subprocess.run(
        ["bash", str(ROOT / "scripts" / "score_exps.sh"), base, "nope"],
        cwd=repo, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode != 0
    assert f"score_exps: no experiment nope under {base[:7]}" in p.stderr
