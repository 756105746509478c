"""Batched sampler (lib/sampling.py) and the generate stage, on tiny-random."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lib.config import merged_params, params_for
from lib.generate import generate, regenerate_one, sample_seed
from lib.io import read_parquet, write_parquet
from lib.sampling import _filter_top_p, draw, eos_ids, sample
from lib.schemas import EXAMPLES, GENERATIONS

# -- the sampler ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vocab", "scale", "top_p"),
    [
        (1000, 4.0, 0.9),  # peaked: the nucleus lies inside the top 256 candidates
        (600, 0.3, 0.8),  # flat: the nucleus needs the whole vocabulary
        (300, 1.0, 1.0),  # no nucleus: inverse CDF
    ],
)
def test_draw_samples_the_top_p_distribution(vocab, scale, top_p):
    from scipy.stats import chisquare

    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(1, vocab) * scale, -1)
    want = _filter_top_p(probs, top_p)[0].double()
    n = 20_000
    u = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = torch.bincount(draw(probs.expand(n, -1).contiguous(), u, top_p), minlength=vocab)
    inside = want > 0
    assert int(got[~inside].sum()) == 0  # never outside the nucleus
    keep = want > 50 / n  # chi-square needs expected counts of a few at least
    obs = got[keep].double().numpy()
    exp = (want[keep] / want[keep].sum() * obs.sum()).numpy()
    assert chisquare(obs, exp).pvalue > 1e-3


def test_draw_is_the_same_with_any_batch_mates():
    torch.manual_seed(0)
    probs = torch.softmax(
        torch.randn(6, 1000) * torch.tensor([[0.2], [5], [1], [0.2], [5], [1]]), -1
    )
    u = torch.rand(6, dtype=torch.float64)
    together = draw(probs, u, 0.9)
    alone = torch.cat([draw(probs[i : i + 1], u[i : i + 1], 0.9) for i in range(6)])
    assert torch.equal(together, alone)


def _prompts(tok):
    text = "a much longer prompt about the weather in Paris today with rain and sun"
    return [tok(text.rsplit(" ", 13 - 2 * i)[0])["input_ids"] for i in range(6)]


@pytest.mark.parametrize(("temperature", "top_p"), [(0.0, 1.0), (0.7, 0.9), (1.0, 1.0)])
def test_batched_left_padded_rows_equal_rows_sampled_alone(tiny_model, temperature, top_p):
    model, tok = tiny_model
    prompts = _prompts(tok)
    prompts = prompts + [prompts[0]] * 3  # duplicates share one prefill
    seeds = [11, 12, 13, 14, 15, 16, 17, 18, 19]
    kw = dict(
        max_new_tokens=12,
        eos_token_ids=eos_ids(tok, model),
        pad_token_id=tok.pad_token_id,
        temperature=temperature,
        top_p=top_p,
    )
    batched = sample(model, prompts, seeds, **kw)
    alone = [sample(model, [p], [s], **kw)[0] for p, s in zip(prompts, seeds, strict=True)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert [c.seed for c in batched] == seeds
    if temperature > 0:  # the duplicated prompt with different seeds gives different samples
        assert len({tuple(c.token_ids) for c in batched[6:]} | {tuple(batched[0].token_ids)}) > 1
    else:
        assert all(c.token_ids == batched[0].token_ids for c in batched[6:])


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(tiny_model):
    model, tok = tiny_model
    # Half the vocabulary ends a sample, so rows stop at different steps and the batch shrinks.
    stop = list(range(0, len(tok), 2))
    kw = dict(max_new_tokens=10, eos_token_ids=stop, pad_token_id=0, temperature=1.0, top_p=1.0)
    prompts = _prompts(tok) * 2
    seeds = list(range(100, 112))
    batched = sample(model, prompts, seeds, **kw)
    alone = [sample(model, [p], [s], **kw)[0] for p, s in zip(prompts, seeds, strict=True)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    lengths = {len(c.token_ids) for c in batched}
    assert len(lengths) > 2  # the shrinking path really ran
    for c in batched:
        assert (c.finish_reason == "eos") == (c.token_ids[-1] % 2 == 0)
        assert c.finish_reason == "eos" or len(c.token_ids) == 10
        assert all(t % 2 == 1 for t in c.token_ids[:-1])


def test_sampler_rejects_bad_arguments(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        sample(model, [[1], [2]], [0], max_new_tokens=2, eos_token_ids=[0], pad_token_id=0)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        sample(model, [[]], [0], max_new_tokens=2, eos_token_ids=[0], pad_token_id=0)


# -- generate ---------------------------------------------------------------------------------


def make_split(domain: str, n: int, prefix: str, meta: str = "{}") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"{prefix}-{i}" for i in range(n)],
            "domain": [domain] * n,
            "input": [f"{prefix} message number {i} " + "word " * (i % 4) for i in range(n)],
            "reference": [f"{prefix} reply {i}" for i in range(n)],
            "group": [f"{prefix}{i}" for i in range(n)],
            "meta": [meta] * n,
            "split": [prefix] * n,
            "references": [[f"{prefix} reply {i}", f"{prefix} other {i}"] for i in range(n)],
        }
    )


SMALL = params_for(
    "generate", num_samples=10, max_new_tokens={"social": 6, "qa": 5, "code": 16}, batch_size=16
)


def test_ten_samples_per_input_recorded_with_distinct_seeds_and_reproducible(tiny_model):
    model, tok = tiny_model
    test = make_split("social", 3, "test")
    df = generate(
        model, tok, "zero_shot", test, None, SMALL, params_for("prompts"), 42, progress=False
    )
    GENERATIONS.to_table(df, "generate")  # schema holds
    assert len(df) == 30
    assert df.groupby("id")["sample"].apply(sorted).tolist() == [list(range(10))] * 3
    assert df["seed"].nunique() == 30
    assert df["seed"].tolist() == [sample_seed(42, i, s) for i in test["id"] for s in range(10)]
    assert set(df["finish_reason"]) <= {"eos", "length"}
    assert (df["n_tokens"] <= 6).all() and (df["n_tokens"] >= 1).all()
    assert df["references"].iloc[0] == ["test reply 0", "test other 0"]
    assert "Message: test message number 1" in df["prompt"].iloc[10]
    assert df["output"].nunique() > 10  # samples of one input differ
    # Any single sample, regenerated alone from its recorded prompt and seed, is the same text.
    for r in (0, 7, 13, 29):
        assert regenerate_one(model, tok, df.iloc[r], SMALL) == df["output"].iloc[r]
    # A different batch size changes nothing.
    again = generate(
        model,
        tok,
        "zero_shot",
        test,
        None,
        params_for("generate", num_samples=10, max_new_tokens={"social": 6}, batch_size=3),
        params_for("prompts"),
        42,
        progress=False,
    )
    pd.testing.assert_frame_equal(df, again)


def test_few_shot_prompt_shows_five_train_examples(tiny_model):
    model, tok = tiny_model
    test, train = make_split("qa", 2, "test"), make_split("qa", 20, "train")
    p = params_for("generate", num_samples=2, max_new_tokens={"qa": 3})
    df = generate(model, tok, "few_shot", test, train, p, params_for("prompts"), 42, progress=False)
    prompt = df["prompt"].iloc[0]
    assert prompt.count("Question: train message number") == 5
    assert prompt.count("Answer: train reply") == 5
    assert "test message number 1" not in prompt
    assert (
        df["prompt"].iloc[0].split("test message")[0]
        == df["prompt"].iloc[2].split("test message")[0]
    )


def test_code_outputs_are_function_bodies(tiny_model):
    model, tok = tiny_model
    meta = json.dumps(
        {
            "prompt": "def f(x):\n",
            "test": "def check(c): pass",
            "entry_point": "f",
            "task_id": "T/0",
        }
    )
    test = make_split("code", 2, "test", meta)
    test["input"] = ["def f(x):\n    '''Return x.'''\n", "def f(x):\n    '''Double x.'''\n"]
    p = params_for("generate", num_samples=3, max_new_tokens={"code": 16})
    df = generate(model, tok, "zero_shot", test, None, p, params_for("prompts"), 1, progress=False)
    assert "```python\ndef f(x):" in df["prompt"].iloc[0]
    for out in df["output"]:
        first = next(ln for ln in out.split("\n") if ln.strip())
        assert first.startswith("    ") and not first[4].isspace()  # a body under the def
        assert out.endswith("\n")


def test_unknown_domain_budget_fails_clearly(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="no entry for domain 'creative'"):
        generate(
            model,
            tok,
            "zero_shot",
            make_split("creative", 1, "t"),
            None,
            SMALL,
            params_for("prompts"),
            1,
        )


# -- the stage --------------------------------------------------------------------------------


@pytest.fixture
def stage_files(tmp_path):
    test, train = make_split("social", 2, "test"), make_split("social", 12, "train")
    write_parquet(test, tmp_path / "test.parquet", EXAMPLES)
    write_parquet(train, tmp_path / "train.parquet", EXAMPLES)
    params = {
        "seed": 7,
        "model": {"base": "tiny-random", "device": "cpu"},
        "generate": {
            "num_samples": 10,
            "temperature": 0.7,
            "top_p": 0.9,
            "max_new_tokens": {"social": 5},
            "batch_size": 8,
            "few_shot_k": 5,
        },
        "prompts": {"zero_shot": {"social": "Reply to: {input}"}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged_params(params)))
    return tmp_path


def _run(d, system, adapter="none"):
    from stages.generate import main

    out = d / f"{system}.parquet"
    main(
        [
            "--system", system, "--test", str(d / "test.parquet"), "--train",
            str(d / "train.parquet"), "--adapter", adapter, "--out", str(out),
            "--params", str(d / "params.yaml"), "--no-progress",
        ]
    )  # fmt: skip
    return read_parquet(out, GENERATIONS)


def test_stage_zero_shot(stage_files):
    df = _run(stage_files, "zero_shot")
    assert len(df) == 20 and set(df["system"]) == {"zero_shot"}
    assert df["prompt"].str.contains("Reply to: test message number").all()  # params override
    assert df["seed"].iloc[3] == sample_seed(7, "test-0", 3)


def test_stage_adapter_system_loads_and_merges_the_lora(stage_files, tiny_model):
    from peft import LoraConfig, get_peft_model

    from lib.models import load_model

    base, tok = load_model(params_for("model", base="tiny-random", device="cpu"))
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        peft_model = get_peft_model(base, cfg)
        for name, prm in peft_model.named_parameters():
            if "lora_B" in name:
                prm.data.normal_(0, 0.5)  # a visible change to the outputs
    adapter = stage_files / "adapter"
    peft_model.save_pretrained(adapter)

    df = _run(stage_files, "baseline", str(adapter))
    assert len(df) == 20 and set(df["system"]) == {"baseline"}
    assert not df["prompt"].str.contains("Reply to:").any()  # raw input, as in training
    # The merged model samples what the unmerged adapter model samples, seed for seed.
    peft_model.eval()
    p = params_for(
        "generate", num_samples=10, max_new_tokens={"social": 5}, top_p=0.9, temperature=0.7
    )
    for r in (0, 11):
        assert regenerate_one(peft_model, tok, df.iloc[r], p) == df["output"].iloc[r]
    # And the adapter matters: the base model gives other samples from the same prompts and seeds.
    model, _ = tiny_model
    base_out = [regenerate_one(model, tok, df.iloc[r], p) for r in range(20)]
    assert np.mean([a != b for a, b in zip(base_out, df["output"], strict=True)]) > 0.5


def test_stage_rejects_a_system_adapter_mismatch(stage_files):
    with pytest.raises(SystemExit, match="needs an adapter folder"):
        _run(stage_files, "polychromic")
    with pytest.raises(SystemExit, match="needs --adapter none"):
        _run(stage_files, "zero_shot", str(stage_files))


# -- batching: auto batch size, the sampler a batch goes through ------------------------------


def test_plan_sizes_auto_batches_per_budget_from_the_longest_prompt():
    from lib.generate import Prompt, plan

    test = make_split("social", 3, "t")
    test.loc[2, "domain"] = "qa"
    prompts = [Prompt("", [1] * n, None) for n in (5, 9, 7)]
    p = params_for(
        "generate", num_samples=5, max_new_tokens={"social": 6, "qa": 4}, batch_size="auto"
    )
    asked = []

    def fit(width, budget):
        asked.append((width, budget))
        return 3 if budget == 6 else 10

    batches = plan(test, prompts, p, 0, fit)
    # Budget 4 (qa): row 2's 5 samples in one batch (room for 10); budget 6 (social): rows 1
    # (9 tokens, longest first) and 0, 10 samples in batches of 3.
    assert asked == [(7, 4), (9, 6)]
    assert [len(b) for b in batches] == [5, 3, 3, 3, 1]
    assert [j.row for j in batches[1]] == [1, 1, 1] and [j.row for j in batches[-1]] == [0]
    with pytest.raises(ValueError, match="auto needs the device's free memory"):
        plan(test, prompts, p, 0)


def test_auto_batch_size_samples_what_a_fixed_size_samples(tiny_model, monkeypatch):
    # The stage's wiring: `auto` sizes batches from free memory (here: room for 7 rows of KV cache
    # and sampler buffers), and on the CPU the eager sampler's samples do not depend on it.
    import psutil

    from lib.generate import BatchSampler
    from lib.static_decoder import StaticDecoder

    model, tok = tiny_model
    per_row = StaticDecoder.bytes_per_row(model.config, 64, 6)
    fake = type("Mem", (), {"available": int(7.5 * per_row / 0.9)})()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)
    assert BatchSampler(model, "auto").rows_that_fit(64, 6) == 7
    test = make_split("social", 3, "test")
    fixed = generate(
        model, tok, "zero_shot", test, None, SMALL, params_for("prompts"), 42, progress=False
    )
    auto = params_for("generate", num_samples=10, max_new_tokens={"social": 6}, batch_size="auto")
    calls = []
    real = BatchSampler.__call__
    monkeypatch.setattr(
        BatchSampler,
        "__call__",
        lambda self, pr, *a, **k: calls.append(len(pr)) or real(self, pr, *a, **k),
    )
    got = generate(
        model, tok, "zero_shot", test, None, auto, params_for("prompts"), 42, progress=False
    )
    pd.testing.assert_frame_equal(fixed, got)
    assert max(calls) <= 7 and sum(calls) == 30 and len(calls) > 1


def test_batch_size_param_takes_an_integer_or_auto(tmp_path):
    from lib.config import ParamsError, load_section
    from lib.generate import GenerateParams

    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(merged_params({"generate": {"batch_size": "auto", "decode": "eager"}}))
    )
    p = load_section(GenerateParams, "generate", path)
    assert p.batch_size == "auto" and p.decode == "eager"
    path.write_text(yaml.safe_dump(merged_params({"generate": {"batch_size": "big"}})))
    with pytest.raises(
        ParamsError, match=r"generate\.batch_size = 'big': accepted: int \| 'auto'$"
    ):
        load_section(GenerateParams, "generate", path)
    path.write_text(yaml.safe_dump(merged_params({"generate": {"decode": "graph"}})))
    with pytest.raises(ParamsError, match=r"generate\.decode = 'graph': accepted: auto \| eager$"):
        load_section(GenerateParams, "generate", path)


def test_cpu_batches_go_through_the_eager_sampler(tiny_model):
    from lib.generate import BatchSampler

    model, _ = tiny_model
    assert not BatchSampler(model, "auto").graphed  # CUDA graphs only on CUDA
    assert not BatchSampler(model, "eager").graphed
