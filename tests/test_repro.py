"""Same inputs, same bytes: a trainer's adapter does not depend on what the process did before.

Issue 21: the first `train_baseline` on a new machine (empty $POLYCHROMIC_CACHE) trained a different
adapter from every later run (CE first differed at step 2). Root cause: `lib.train.train` seeds the
global torch RNG, then loads the model, then attaches LoRA (whose A matrices and dropout masks draw
from that stream). On a cold cache the load converts the SmolLM2 GGUF, and the conversion builds a
randomly initialised model with `from_config` before copying the real weights in: that init consumed
the stream, so LoRA started from other A matrices. Step 1's CE is the same (B = 0), step 2's differs.
Fix: `lib.models.load_model` (and the conversion) run under `rng_neutral`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lib.config import params_for
from lib.models import load_model, tiny_random_model

ROOT = Path(__file__).resolve().parents[1]


def _rng_states() -> tuple[torch.Tensor, object, object]:
    import random

    import numpy as np

    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].tobytes()


def test_load_model_leaves_the_callers_rng_untouched(tmp_path, monkeypatch, tiny_model):
    """A local checkpoint without its lm_head: transformers initialises the missing head at load time,
    from the global torch RNG, the same way the GGUF conversion's `from_config` did (the SmolLM2 path
    itself is tested in the slow test below). Without `rng_neutral` the caller's stream moves."""
    _, tok = tiny_model
    model = tiny_random_model(tok)
    model.config.tie_word_embeddings = False
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("lm_head")}
    folder = tmp_path / "headless"
    model.save_pretrained(folder, state_dict=state)
    monkeypatch.setenv("POLYCHROMIC_CACHE", str(tmp_path / "cache"))

    torch.manual_seed(11)
    before = _rng_states()
    loaded, _ = load_model(params_for("model", base=str(folder), device="cpu"), tok)
    after = _rng_states()
    assert not torch.equal(loaded.lm_head.weight, model.lm_head.weight)  # the head was initialised
    assert torch.equal(before[0], after[0]), "load_model moved the global torch RNG"
    assert before[1:] == after[1:], "load_model moved Python's or NumPy's RNG"


def _train_df() -> pd.DataFrame:
    inputs = ["Do you like hiking?", "Cats or dogs?", "Where did you grow up?", "Any plans?"]
    refs = ["Yes, I love the mountains.", "Dogs, always.", "By the sea.", "A road trip."]
    return pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(4)],
            "domain": "social",
            "input": inputs,
            "reference": refs,
            "group": [f"g{i}" for i in range(4)],
            "meta": "{}",
            "split": "train",
            "references": [[r] for r in refs],
        }
    )


def _stage_params(tmp_path: Path) -> Path:
    """params.yaml with the run made short; everything else as committed (dropout stays on)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"].update(base="smollm2-135m-instruct", device="cpu")
    p["train"].update(max_steps=3, batch_size=2, max_length=48, checkpoint_every=0)
    p["loss"].update(num_samples=2, max_new_tokens=4, diversity="lexical")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def _run_stage(system: str, tmp_path: Path, cache: Path, name: str) -> dict[str, bytes]:
    from tests.pipeline_util import env

    out = tmp_path / name
    cmd = [
        sys.executable,
        "-m",
        f"stages.train_{system}",
        "--train",
        str(tmp_path / "train.parquet"),
    ]
    cmd += ["--out", str(out), "--params", str(tmp_path / "params.yaml"), "--no-progress"]
    r = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env({"POLYCHROMIC_CACHE": str(cache)}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return {f.name: f.read_bytes() for f in sorted(out.iterdir())}  # weights, config, card


@pytest.mark.slow
@pytest.mark.parametrize("system", ["baseline", "gem", "polychromic"])
def test_cold_and_warm_model_cache_train_the_same_adapter(system, tmp_path):
    """One process converts the GGUF (empty cache), the next reuses the conversion, a third
    converts into another cache folder (a fresh clone elsewhere): the same bytes, every file."""
    from lib.io import write_parquet
    from lib.schemas import EXAMPLES

    write_parquet(_train_df(), tmp_path / "train.parquet", EXAMPLES)
    _stage_params(tmp_path)
    cache = tmp_path / "cache"
    cold = _run_stage(system, tmp_path, cache, "cold")
    assert list(cache.glob("smollm2-135m-instruct-*/model.safetensors"))
    warm = _run_stage(system, tmp_path, cache, "warm")
    assert cold == warm, f"{system}: the cold-cache run trained a different adapter"
    other = _run_stage(system, tmp_path, tmp_path / "elsewhere", "other")
    assert other == cold, f"{system}: another cache folder wrote other adapter bytes"


def test_stage_processes_run_with_a_fixed_hash_seed():
    """Issue 21, found by a fresh-clone `dvc repro`: BERTScore (and through the reward, the
    polychromic adapter) differed in the 8th digit from run to run, because bert_score orders its
    sentences through a set of str, whose order follows the per-process hash salt. Every
    `python -m stages...` process re-executes itself with PYTHONHASHSEED=0 (stages/__init__.py);
    `python -m stages` prints the hash it then sees."""
    from tests.pipeline_util import env

    def hash_under(seed: str) -> str:
        code = "print(hash('polychromic'))"
        e = env({"PYTHONHASHSEED": seed})
        return subprocess.run(
            [sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True
        ).stdout.strip()

    want, other = hash_under("0"), hash_under("7")
    assert want != other  # the guard: the salt does change str hashes
    for seed in ("7", None):
        e = env({})
        if seed is None:
            e.pop("PYTHONHASHSEED", None)
        else:
            e["PYTHONHASHSEED"] = seed
        r = subprocess.run(
            [sys.executable, "-m", "stages"], cwd=ROOT, env=e, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert f"hash('polychromic')={want}" in r.stdout, (seed, r.stdout)


@pytest.mark.parametrize(
    ("argv", "environ", "again"),
    [
        (
            ["py", "-m", "stages.score", "--system", "x"],
            {},
            ["-m", "stages.score", "--system", "x"],
        ),
        (["py", "-u", "-m", "stages.judge"], {"PYTHONHASHSEED": "3"}, ["-u", "-m", "stages.judge"]),
        (["py", "-m", "stages.score"], {"PYTHONHASHSEED": "0"}, None),  # already fixed
        (["py", "-m", "pytest", "tests"], {}, None),  # not a stage: pytest is left alone
        (["py", "-m", "stagesx"], {}, None),
        (["py", "script.py", "-m", "stages.x"], {}, None),  # -m after the script is its argument
    ],
)
def test_hash_seed_reexec_only_for_stage_modules(argv, environ, again):
    from stages import hash_seed_reexec

    assert hash_seed_reexec(argv, environ) == again
