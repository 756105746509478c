"""Data-parallel training through accelerate (lib/distributed.py): K processes at batch b train like
one at batch K·b, and the gradient sync is the wrapper's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from lib.config import deep_merge, params_for, read_params
from lib.distributed import Dist
from lib.models import load_model
from lib.train import Trainer, attach_lora, build_examples, sample_seed
from tests.test_train import LORA, _df, replace

ROOT = Path(__file__).resolve().parents[1]
MP = params_for("model", base="tiny-random", device="cpu")


class FakeRanks(Dist):
    """Rank r of `world` without a process group: every rank sees the same token counts."""

    def sum(self, value: float) -> float:
        return value * self.world


def test_ranks_split_each_global_batch_without_overlap_and_sample_distinct_seeds(tiny_model):
    _, tok = tiny_model
    examples, _ = build_examples(_df(8), tok, 48)
    tp = params_for(
        "train",
        max_steps=2,
        batch_size=2,
        warmup_steps=0,
        max_length=48,
        checkpoint_every=0,
    )
    loss = params_for("loss", lambda_=0.5, num_samples=2, diversity="lexical", max_new_tokens=3)

    def batches(dist: Dist, batch_size: int) -> list[list[int]]:
        model = attach_lora(load_model(MP, tok)[0], LORA, MP)
        params = replace(tp, batch_size=batch_size)
        tr = Trainer("polychromic", model, tok, examples, params, 3, loss, dist=dist)
        tr.step()
        tr.step()
        return tr.seen_batches

    single = batches(Dist(), 4)
    r0, r1 = batches(FakeRanks(0, 2), 2), batches(FakeRanks(1, 2), 2)
    for step in range(2):
        assert not set(r0[step]) & set(r1[step]), "two ranks trained on the same example"
        assert r0[step] + r1[step] == single[step], "ranks must cover the single-process batch"
        # Sample seeds depend on (seed, step, example, i): disjoint examples, disjoint seeds, and
        # each is the seed the single-process run uses for that sample.
        seeds = [sample_seed(3, step, e, i) for e in r0[step] + r1[step] for i in range(2)]
        assert len(set(seeds)) == len(seeds)


def test_epochs_mode_counts_steps_in_global_batches(tiny_model):
    # max_steps <= 0: `epochs` passes over the data, each optimizer step consuming
    # batch_size × grad_accum × world examples. 8 examples, 2 epochs.
    _, tok = tiny_model
    examples, _ = build_examples(_df(8), tok, 48)
    model = attach_lora(load_model(MP, tok)[0], LORA, MP)

    def total(world: int, batch_size: int, grad_accum: int) -> int:
        tp = params_for(
            "train",
            max_steps=0,
            epochs=2,
            batch_size=batch_size,
            grad_accum=grad_accum,
        )
        dist = FakeRanks(0, world) if world > 1 else Dist()
        return Trainer("baseline", model, tok, examples, tp, 3, dist=dist).total_steps

    assert total(1, 2, 1) == 8  # 2 × ⌈8 / 2⌉
    assert total(2, 2, 1) == 4  # 2 × ⌈8 / 4⌉: two ranks halve the steps (it was 8: 2 epochs each)
    assert total(2, 2, 2) == 2  # 2 × ⌈8 / 8⌉
    assert total(2, 3, 1) == 4  # 2 × ⌈8 / 6⌉: the last global batch wraps into the next epoch


def _params(tmp: Path, batch_size: int, **train) -> Path:
    p = deep_merge(read_params(ROOT / "params.yaml"), read_params(ROOT / "configs/smoke.yaml"))
    p["lora"]["dropout"] = 0.0  # dropout masks are per process: equality needs it off
    p["train"].update(
        {"batch_size": batch_size, "max_steps": 3, "checkpoint_every": 0, "val_every": 0, **train}
    )
    # grad_norm_every 2: steps 1 and 3 sync through DDP's reducer, step 2 (per-term norms, through
    # autograd.grad) through the explicit mean.
    p["loss"].update(num_samples=2, max_new_tokens=4, diversity="semantic", grad_norm_every=2)
    path = tmp / f"params-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def _train_cmd(tmp: Path, name: str, params: Path, system: str) -> list[str]:
    return [
        "-m",
        f"stages.train_{system}",
        "--train",
        str(tmp / "train.parquet"),
        "--out",
        str(tmp / name / "adapter"),
        "--live",
        str(tmp / name / "live"),
        "--params",
        str(params),
        "--no-progress",
    ]


def _train(
    launcher: list[str],
    tmp: Path,
    name: str,
    params: Path,
    env: dict[str, str],
    system: str = "polychromic",
) -> str:
    """Run train_<system> under `launcher` into tmp/name; its stdout (fails on a non-zero exit)."""
    run = subprocess.run(
        [*launcher, *_train_cmd(tmp, name, params, system)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _adapter_generates(params: Path, adapter: Path) -> None:
    """The 2-process adapter loads as the generate stage loads it (merged) and samples; the
    merge changed the model (its logits are not the base model's)."""
    from lib.config import load_section
    from lib.generate import load_system_model
    from lib.models import ModelParams
    from lib.sampling import sample

    mp = load_section(ModelParams, "model", params)
    tuned, _ = load_system_model(mp, str(adapter))
    base, _ = load_system_model(mp, None)
    ids = torch.tensor([[1, 5, 9, 11]])
    with torch.no_grad():
        assert not torch.equal(tuned(input_ids=ids).logits, base(input_ids=ids).logits)
    out = sample(tuned, [[1, 5, 9, 11]], [0], max_new_tokens=4, eos_token_ids=[-1],
                 pad_token_id=0, temperature=0.0)  # fmt: skip
    assert len(out[0].token_ids) == 4


@pytest.mark.e2e
@pytest.mark.parametrize("system", ["baseline", "polychromic"])
def test_two_processes_train_like_one_at_the_same_global_batch(tmp_path, system):
    if not torch.distributed.is_available() or shutil.which("torchrun") is None:
        pytest.skip("torch.distributed / torchrun not available")
    _df(16).to_parquet(tmp_path / "train.parquet")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    _train([sys.executable], tmp_path, "one", _params(tmp_path, 4), env, system)
    # torchrun is what `accelerate launch --multi_gpu` runs; accelerate's PartialState reads the
    # same environment (gloo on CPU, NCCL on GPUs).
    two = _train(
        ["torchrun", "--standalone", "--nproc_per_node", "2"],
        tmp_path,
        "two",
        _params(tmp_path, 2),
        env,
        system,
    )
    assert "2 process(es)" in two
    assert two.count("steps on 16 pairs") == 1, "only rank 0 reports"

    a = load_file(tmp_path / "one/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "two/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys()
    scale = max(float(v.abs().max()) for v in a.values())
    # Adam turns float-rounding differences of near-zero gradients into ~1e-5 relative ones
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4 * scale
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k), "nothing trained"
    _adapter_generates(_params(tmp_path, 2), tmp_path / "two/adapter")

    curves = {
        n: pd.read_csv(tmp_path / n / "live/plots/metrics/train/loss.tsv", sep="\t")
        for n in ("one", "two")
    }
    assert list(curves["two"]["step"]) == [1, 2, 3], "one writer: one row per step"
    assert curves["two"]["loss"].tolist() == pytest.approx(curves["one"]["loss"].tolist(), rel=1e-5)
    if system == "baseline":
        return
    lam = pd.read_csv(tmp_path / "two/live/plots/metrics/train/grad_norm_diversity.tsv", sep="\t")
    assert (lam["grad_norm_diversity"] > 0).any(), "the λ term must be live in this comparison"


@pytest.mark.e2e
def test_two_processes_epochs_mode_trains_the_same_number_of_steps(tmp_path):
    # One epoch over 16 pairs: 1 process at batch 4 and 2 processes at batch 2 both take 4 steps
    # (before, each rank counted its own batch and 2 processes trained 2 epochs: 8 steps).
    if not torch.distributed.is_available() or shutil.which("torchrun") is None:
        pytest.skip("torch.distributed / torchrun not available")
    _df(16).to_parquet(tmp_path / "train.parquet")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    one = _train(
        [sys.executable], tmp_path, "one", _params(tmp_path, 4, max_steps=0, epochs=1), env
    )
    two = _train(
        ["torchrun", "--standalone", "--nproc_per_node", "2"],
        tmp_path,
        "two",
        _params(tmp_path, 2, max_steps=0, epochs=1),
        env,
    )
    assert "4 steps on 16 pairs, 1 process(es)" in one
    assert "4 steps on 16 pairs, 2 process(es)" in two


@pytest.mark.e2e
def test_accelerate_launch_single_process_equals_plain_python(tmp_path):
    # params.yaml `launcher: accelerate launch ...` must not change a one-process run at all.
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    _df(8).to_parquet(tmp_path / "train.parquet")
    params = _params(tmp_path, 4)
    # `accelerate launch` sets OMP_NUM_THREADS (1 when unset) and CPU float reductions depend on the
    # thread count (the MiniLM reward, e.g.): pin it for both, so only the launcher differs.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    launchers = {
        "python": [sys.executable],
        "accelerate": [
            "accelerate", "launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
        ],
    }  # fmt: skip
    for name, launcher in launchers.items():
        _train(launcher, tmp_path, name, params, env)
    a = load_file(tmp_path / "python/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "accelerate/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _torchrun() -> list[str]:
    if not torch.distributed.is_available() or shutil.which("torchrun") is None:
        pytest.skip("torch.distributed / torchrun not available")
    return ["torchrun", "--standalone", "--nproc_per_node", "2"]


def _grads(launcher: list[str], out: Path, batch: int) -> tuple[dict, ...]:
    """tests/ddp_worker.py's per-scenario gradients, one dict per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [*launcher, "-m", "tests.ddp_worker", str(out), str(batch)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = sorted(out.glob("rank*.pt"))
    return tuple(torch.load(p) for p in ranks)


def test_a_real_step_on_two_ranks_gets_the_one_process_gradient_from_the_wrapper(tmp_path):
    # One Trainer.step per scenario through Engine.launch (DDP over gloo): the gradients AdamW is
    # handed on each of 2 ranks at batch 2 equal those of 1 process at batch 4 (independent
    # reference: no wrapper, no shares) for baseline, gem, polychromic (DDP's reducer), grad
    # accumulation (no_sync on the first micro-batch) and per-term norm steps (autograd.grad,
    # under no_sync, then the explicit mean). The planted_* scenarios disable the sync: with
    # every micro-batch under the wrapper's no_sync the ranks disagree, so no other all-reduce
    # is left doing the work; without the explicit mean a norm step disagrees too.
    launcher = _torchrun()
    (one,) = _grads([sys.executable], tmp_path / "one", 4)
    r0, r1 = _grads(launcher, tmp_path / "two", 2)

    def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        scale = max(float(g.abs().max()) for g in a)
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True)) / scale

    for name, ref in one.items():
        for rank in (r0, r1):
            if name.startswith("planted_"):
                assert rel(ref, rank[name]) > 0.1, f"{name}: the ranks still agree"
            else:
                assert rel(ref, rank[name]) < 1e-5, name
    assert rel(r0["planted_nosync"], r1["planted_nosync"]) > 0.1


@pytest.mark.e2e
def test_two_processes_generate_the_one_process_parquet(tmp_path):
    # stages.generate under torchrun: the ranks split the 5 inputs (3 + 2, unequal on purpose),
    # rank 0 gathers and writes one Parquet whose bytes equal a plain one-process run's.
    from lib.io import write_parquet
    from lib.schemas import EXAMPLES
    from tests.test_generate import make_split

    launcher = _torchrun()
    write_parquet(make_split("social", 5, "test"), tmp_path / "test.parquet", EXAMPLES)
    write_parquet(make_split("social", 4, "train"), tmp_path / "train.parquet", EXAMPLES)
    p = deep_merge(read_params(ROOT / "params.yaml"), read_params(ROOT / "configs/smoke.yaml"))
    p["model"]["device"] = "cpu"
    p["generate"].update(num_samples=3, batch_size=4, temperature=1.0, top_p=0.9)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    outs = {}
    for name, cmd in {"one": [sys.executable], "two": launcher}.items():
        out = tmp_path / f"{name}.parquet"
        args = [
            "-m", "stages.generate", "--system", "zero_shot", "--adapter", "none",
            "--test", str(tmp_path / "test.parquet"), "--train", str(tmp_path / "train.parquet"),
            "--out", str(out), "--params", str(tmp_path / "params.yaml"), "--no-progress",
        ]  # fmt: skip
        run = subprocess.run(
            [*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.count("15 samples for 5 inputs") == 1, "one writer"
        outs[name] = out.read_bytes()
    assert outs["one"] == outs["two"]
    df = pd.read_parquet(tmp_path / "two.parquet")
    assert df["id"].nunique() == 5 and df["output"].nunique() > 1


def test_polychromic_refuses_fsdp_and_names_the_ddp_config(tiny_model):
    # Sampling needs the full model every step; under FSDP the trainer says what to launch instead.
    from lib.train.engine import Engine

    class Sharded(Engine):
        sharded = True  # what Engine.launch reports under an FSDP accelerate config

    _, tok = tiny_model
    examples, _ = build_examples(_df(4), tok, 48)
    model = attach_lora(load_model(MP, tok)[0], LORA, MP)
    tp = params_for("train", max_steps=1, batch_size=2, checkpoint_every=0)
    loss = params_for("loss", num_samples=2, diversity="lexical", max_new_tokens=3)
    engine = Sharded(Dist())
    engine.wrap(model)
    with pytest.raises(ValueError, match="configs/accelerate/ddp.yaml"):
        Trainer("polychromic", model, tok, examples, tp, 3, loss, engine=engine)
    Trainer("baseline", model, tok, examples, tp, 3, engine=engine)  # FSDP serves baseline


class _FakeAccelerator:
    """What accelerate's Accelerator gives a plain one-process run on a GPU machine: device
    `cuda` with no index (seen on the H200: the first 1-GPU bench run crashed in set_device)."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        self.process_index, self.num_processes, self.local_process_index = 0, 1, 0

    def __call__(self, **_kw):
        return self


@pytest.mark.parametrize(
    ("device", "expected"), [("cuda", []), ("cuda:1", [torch.device("cuda:1")])]
)
def test_engine_launch_sets_the_device_only_when_it_has_an_index(monkeypatch, device, expected):
    # torch.cuda.set_device(torch.device("cuda")) raises ValueError ("Expected a torch.device with
    # a specified index") even without a GPU: a bare device must not reach it.
    import accelerate

    from lib.train.engine import Engine

    monkeypatch.setattr(accelerate, "Accelerator", _FakeAccelerator(device))
    calls: list[torch.device] = []

    def set_device(d):
        if d.index is None:
            raise ValueError("Expected a torch.device with a specified index")
        calls.append(d)

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    engine = Engine.launch(cpu=False)
    assert calls == expected
    assert (engine.dist.rank, engine.dist.world) == (0, 1)
