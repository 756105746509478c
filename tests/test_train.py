"""lib.train and the train stages on tiny-random (CPU): the diversity term is real, RNG is isolated,
base weights stay frozen, a killed run resumes to the same adapter."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from lib.chat import IGNORE_INDEX, chat_prompt_ids, training_example
from lib.config import merged_params, params_for
from lib.models import load_model
from lib.train import (
    Trainer,
    attach_lora,
    build_examples,
    collate,
    losses,
    train,
)


def replace(p, **overrides):
    return type(p)(**{**p.__dict__, **overrides})


MP = params_for("model", base="tiny-random", device="cpu")
LORA = params_for("lora")
GEM = params_for("gem")
FAST = params_for(
    "train",
    max_steps=3,
    batch_size=3,
    warmup_steps=1,
    max_length=48,
    checkpoint_every=0,
    lr=1e-2,
    val_every=0,  # val curves: tests/test_validate.py
)
LEX = params_for("loss", lambda_=0.5, num_samples=3, diversity="lexical", max_new_tokens=6)
# tiny-random's samples are random tokens: their word bigrams never overlap, every lexical distance
# is 1 and every credit 0. MiniLM distances vary, so tests that need a non-zero term use them.
SEM = replace(LEX, diversity="semantic")

INPUTS = [
    "What did you do this weekend?",
    "Do you like hiking?",
    "Tell me about your favourite food.",
    "Where did you grow up?",
    "What music do you listen to?",
    "Any plans for the summer?",
    "Have you read a good book lately?",
    "Cats or dogs?",
]
REFS = [
    "I went to the beach with friends.",
    "Yes, I love the mountains.",
    "Pizza, no question.",
    "A small town by the sea.",
    "Mostly jazz and some rock.",
    "A road trip up the coast.",
    "Yes, a mystery novel.",
    "Dogs, always dogs!",
]


def _df(n: int = 8, null_refs: int = 0) -> pd.DataFrame:
    refs: list[str | None] = [REFS[i % len(REFS)] for i in range(n)]
    for i in range(null_refs):
        refs[i] = None
    return pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(n)],
            "domain": "social",
            "input": [INPUTS[i % len(INPUTS)] for i in range(n)],
            "reference": refs,
            "group": [f"g{i}" for i in range(n)],
            "meta": "{}",
            "split": "train",
            "references": [[r] if r else [] for r in refs],
        }
    )


def _adapter(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run(tmp_path, name, system, tok, *, lora=LORA, tp=FAST, loss=LEX, **kw):
    out = tmp_path / name
    train(
        system,
        _df(),
        seed=7,
        model_params=MP,
        lora=lora,
        train_params=tp,
        loss=loss,
        out_dir=out,
        progress=False,
        tokenizer=tok,
        **kw,
    )
    return _adapter(out)


def _lora_model(tok, dropout=0.0):
    base, _ = load_model(MP, tok)
    return attach_lora(base, replace(LORA, dropout=dropout), MP)


# -- prompt formatting ------------------------------------------------------------------------


def test_training_example_masks_prompt_chat_and_plain(tiny_model):
    _, tok = tiny_model
    ids, labels = training_example(tok, "hi there", "hello you")
    prompt = chat_prompt_ids(tok, "hi there")
    assert ids[: len(prompt)] == prompt
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    target = ids[len(prompt) :]
    assert labels[len(prompt) :] == target
    assert tok.decode(target) == "hello you<|im_end|>"  # ends on the turn's end token, not "\n"
    assert target[-1] == tok.eos_token_id

    plain = copy.deepcopy(tok)
    plain.chat_template = None
    ids, labels = training_example(plain, "hi", "yo")
    assert plain.decode([t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX]) == (
        "Input: hi\nOutput: "
    )
    assert plain.decode([lab for lab in labels if lab != IGNORE_INDEX]) == "yo" + plain.eos_token


def test_training_example_truncates_target_to_max_length(tiny_model):
    _, tok = tiny_model
    prompt = chat_prompt_ids(tok, "hi")
    ids, labels = training_example(tok, "hi", "word " * 50, max_length=len(prompt) + 3)
    assert len(ids) == len(prompt) + 3 and sum(lab != IGNORE_INDEX for lab in labels) == 3


def test_build_examples_skips_null_references(tiny_model):
    _, tok = tiny_model
    ex, rep = build_examples(_df(5, null_refs=2), tok, 64)
    assert (rep.rows, rep.used, rep.skipped_null_reference) == (5, 3, 2)
    assert [e.index for e in ex] == [2, 3, 4]


# -- log π(y|x) of samples --------------------------------------------------------------------


# -- the diversity term is real ---------------------------------------------------------------


def test_lambda_term_gradient_matches_independent_computation(tiny_model):
    _, tok = tiny_model
    model = _lora_model(tok).to(torch.float64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B so the gradient reaches A as well
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    examples, _ = build_examples(_df(2), tok, 48)
    tr = Trainer("polychromic", model, tok, examples, FAST, 0, LEX)
    completions = tr.draw(examples).token_ids
    assert all(len(c) > 0 for group in completions for c in group)
    credit = torch.tensor([[0.3, -0.1, 0.5], [0.2, 0.0, -0.4]], dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]

    n_tok = sum(len(c) for g in completions for c in g)
    logp = tr.packed_pass(examples, completions, kl=False).logp
    term = losses.policy_term(credit, logp, torch.tensor(n_tok))
    batched = torch.autograd.grad(term, params)

    def independent() -> torch.Tensor:  # −Σ credit·log π / Σ|y|, one unpadded sample at a time
        total = torch.zeros((), dtype=torch.float64)
        for b, ex in enumerate(examples):
            for i, c in enumerate(completions[b]):
                ids = torch.tensor([ex.prompt_ids + c])
                lp = model(input_ids=ids).logits[0].log_softmax(-1)
                n = len(ex.prompt_ids)
                total = total - credit[b, i] * sum(lp[n - 1 + t, y] for t, y in enumerate(c))
        return total / n_tok

    expr = independent()
    assert float(term.detach()) == pytest.approx(float(expr.detach()), rel=1e-9)
    by_hand = torch.autograd.grad(expr, params)
    assert sum(float(x.abs().sum()) for x in batched) > 0
    for a, b in zip(batched, by_hand, strict=True):
        # float32 RMSNorm inside the float64 model: agreement to ~1e-7 of the largest entry
        assert float((a - b).abs().max()) <= 1e-6 * float(b.abs().max())

    # Directional finite difference along the gradient (the model's RMSNorm computes in float32,
    # so single-entry differences drown in rounding): the slope must equal |∇|.
    norm = torch.sqrt(sum((g_**2).sum() for g_ in batched))
    h = 1e-3
    with torch.no_grad():
        for q, g_ in zip(params, batched, strict=True):
            q.add_(h * g_ / norm)
        up = float(independent())
        for q, g_ in zip(params, batched, strict=True):
            q.sub_(2 * h * g_ / norm)
        down = float(independent())
    assert (up - down) / (2 * h) == pytest.approx(float(norm), rel=1e-3)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_ce_and_logprobs_match_separate_unpadded_passes(tiny_model, checkpointing):
    # The polychromic step packs prompts, references and samples into one forward; its loss and
    # gradient must equal a padded CE batch plus one unpadded forward per sample.
    _, tok = tiny_model
    model = _lora_model(tok).to(torch.float64)
    if checkpointing:
        model.get_base_model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    examples, _ = build_examples(_df(3), tok, 48)
    assert len({len(e.prompt_ids) for e in examples}) > 1, "prompts of one length test no padding"
    tr = Trainer("polychromic", model, tok, examples, FAST, 0, LEX)
    completions = tr.draw(examples).token_ids
    credit = torch.randn((3, LEX.num_samples), generator=g, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()  # dropout 0 in _lora_model: train mode is deterministic

    out = tr.packed_pass(examples, completions, kl=False)
    ce, logp = out.ce, out.logp
    n_tok = torch.tensor(sum(len(c) for g in completions for c in g))
    packed = ce + 0.7 * losses.policy_term(credit, logp, n_tok)
    grad_packed = torch.autograd.grad(packed, params)

    inputs = collate(examples, tok.pad_token_id, torch.device("cpu"))
    labels = inputs.pop("labels")
    ce_sep = losses.ce_loss(model(**inputs, use_cache=False).logits, labels)
    logp_sep = torch.zeros((3, LEX.num_samples), dtype=torch.float64)
    for b, ex in enumerate(examples):
        for i, c in enumerate(completions[b]):
            lp = model(input_ids=torch.tensor([ex.prompt_ids + c])).logits[0].log_softmax(-1)
            n = len(ex.prompt_ids)
            logp_sep[b, i] = sum(lp[n - 1 + t, y] for t, y in enumerate(c))
    separate = ce_sep + 0.7 * losses.policy_term(credit, logp_sep, n_tok)
    grad_separate = torch.autograd.grad(separate, params)

    assert float(ce) == pytest.approx(float(ce_sep), rel=1e-9)
    assert torch.allclose(logp.detach(), logp_sep.detach(), rtol=1e-9, atol=1e-9)
    for a, b in zip(grad_packed, grad_separate, strict=True):
        assert float((a - b).abs().max()) <= 1e-6 * float(b.abs().max()) + 1e-12


def test_sampling_and_scoring_do_not_move_training_rng(tiny_model):
    _, tok = tiny_model
    model = _lora_model(tok, dropout=0.1)
    examples, _ = build_examples(_df(3), tok, 48)
    tr = Trainer("polychromic", model, tok, examples, FAST, 0, LEX)
    before = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        pass
    draw = tr.draw(examples)
    tr.scorer.submit(examples, draw).result()
    assert torch.equal(
        before, torch.get_rng_state()
    )  # sample() itself draws only from its generators
    assert model.training  # back in train mode after sampling


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_polychromic_lambda0_is_baseline_bit_for_bit(tiny_model, tmp_path, dropout):
    _, tok = tiny_model
    lora = replace(LORA, dropout=dropout)
    base = _run(tmp_path, "b", "baseline", tok, lora=lora)
    poly0 = _run(
        tmp_path,
        "p0",
        "polychromic",
        tok,
        lora=lora,
        loss=replace(SEM, lambda_=0.0, kl_coef=0.0),
    )
    assert _same(base, poly0)
    weights = "adapter_model.safetensors"
    assert (tmp_path / "b" / weights).read_bytes() == (tmp_path / "p0" / weights).read_bytes()
    if dropout == 0.0:  # no dropout RNG: any difference comes from the extra terms' gradients
        poly = _run(tmp_path, "p", "polychromic", tok, lora=lora, loss=replace(SEM, kl_coef=0.0))
        assert not _same(base, poly)  # the λ term alone moves the adapter
        kl_only = _run(tmp_path, "k", "polychromic", tok, lora=lora, loss=replace(SEM, lambda_=0.0))
        assert not _same(base, kl_only)  # and so does the KL alone (0 only at step 1)


def test_lambda_positive_keeps_data_order(tiny_model):
    _, tok = tiny_model
    examples, _ = build_examples(_df(), tok, 48)
    orders = []
    for system in ("baseline", "polychromic"):
        tr = Trainer(system, _lora_model(tok, dropout=0.05), tok, examples, FAST, 7, SEM)
        for _ in range(3):
            m = tr.step()
        orders.append(tr.seen_batches)
        if system == "polychromic":
            assert m["loss"] != m["ce"] and 0.0 <= m["diversity"] <= 1.0
    assert orders[0] == orders[1]
    assert len({i for b in orders[0] for i in b}) == 8  # an epoch visits every example


def test_semantic_distances_of_identical_samples_are_zero():
    from lib.train import Scorer

    sc = Scorer(replace(SEM, objective="multiplicative"), torch.device("cpu"), "social")
    d = sc.distances([["a cat", "a cat", "a cat"], ["the sea", "a tax form", "jazz"]])
    assert torch.allclose(d[0], torch.zeros(3, 3), atol=1e-6)
    off = d[1][~torch.eye(3, dtype=torch.bool)]
    assert bool((off > 0.3).all()) and torch.equal(d[1], d[1].T)


# -- every trainer trains the adapter only ----------------------------------------------------


@pytest.mark.parametrize("system", ["baseline", "gem", "polychromic"])
def test_trainer_changes_adapter_not_base(tiny_model, system):
    _, tok = tiny_model
    model = _lora_model(tok, dropout=0.05)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples, _ = build_examples(_df(), tok, 48)
    tr = Trainer(system, model, tok, examples, FAST, 0, LEX, GEM)
    for _ in range(2):
        m = tr.step()
    assert m["loss"] == m["loss"]  # not NaN
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    lora = {n for n in before if "lora_" in n}
    assert changed and changed <= lora
    assert {n for n in lora if "lora_B" in n} <= changed


# -- resume -----------------------------------------------------------------------------------


class Crash(RuntimeError):
    pass


def test_killed_run_resumes_to_the_same_adapter(tiny_model, tmp_path):
    _, tok = tiny_model
    tp = replace(FAST, max_steps=5, checkpoint_every=2)
    lora = replace(LORA, dropout=0.1)
    straight = _run(tmp_path, "straight", "polychromic", tok, lora=lora, tp=tp, loss=SEM)

    ckpt = tmp_path / ".ckpt" / "polychromic"

    def crash(trainer):
        if trainer.step_idx == 3:
            raise Crash

    with pytest.raises(Crash):
        _run(
            tmp_path,
            "resumed",
            "polychromic",
            tok,
            lora=lora,
            tp=tp,
            loss=SEM,
            ckpt_dir=ckpt,
            after_step=crash,
        )
    assert (ckpt / "state.pt").exists() and not (tmp_path / "resumed").exists()
    seen = []
    resumed = _run(
        tmp_path,
        "resumed",
        "polychromic",
        tok,
        lora=lora,
        tp=tp,
        loss=SEM,
        ckpt_dir=ckpt,
        after_step=lambda t: seen.append(t.step_idx),
    )
    assert seen == [3, 4, 5]  # picked up after the step-2 checkpoint
    assert _same(straight, resumed)
    assert not ckpt.exists()

    # A checkpoint from other params is ignored, not resumed.
    with pytest.raises(Crash):
        _run(tmp_path, "x", "polychromic", tok, lora=lora, tp=tp, ckpt_dir=ckpt, after_step=crash)
    seen = []
    other = replace(LEX, lambda_=0.2)
    _run(
        tmp_path,
        "x",
        "polychromic",
        tok,
        lora=lora,
        tp=tp,
        loss=other,
        ckpt_dir=ckpt,
        after_step=lambda t: seen.append(t.step_idx),
    )
    assert seen == [1, 2, 3, 4, 5]


# -- the stage --------------------------------------------------------------------------------


def _params(tmp_path, **train_overrides):
    import yaml

    p = {
        "seed": 3,
        "model": {"base": "tiny-random", "device": "cpu"},
        "lora": {
            "r": 4,
            "alpha": 8,
            "dropout": 0.0,
            "target_modules": ["q_proj", "v_proj", "down_proj"],
        },
        "train": {
            "max_steps": 2,
            "batch_size": 2,
            "max_length": 48,
            "log_every": 1,
            **train_overrides,
        },
        "loss": {
            "lambda": 0.3,
            "num_samples": 2,
            "diversity": "lexical",
            "max_new_tokens": 4,
            "grad_norm_every": 2,
        },
        "gem": {"beta": 0.7},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merged_params(p)))
    return path


def test_stage_writes_adapter_only_and_dvclive_metrics(tmp_path, capsys):
    from lib.io import write_parquet
    from lib.schemas import EXAMPLES
    from stages import train_polychromic

    params = _params(tmp_path)
    data = tmp_path / "train.parquet"
    write_parquet(_df(6, null_refs=1), data, EXAMPLES)
    val = tmp_path / "val.parquet"
    write_parquet(_df(4).assign(split="val"), val, EXAMPLES)
    out, live = tmp_path / "models" / "polychromic", tmp_path / "metrics" / "train" / "polychromic"
    train_polychromic.main(
        [
            "--train",
            str(data),
            "--val",
            str(val),
            "--out",
            str(out),
            "--live",
            str(live),
            "--params",
            str(params),
            "--no-progress",
        ]
    )
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and set(cfg["target_modules"]) == {"q_proj", "v_proj", "down_proj"}
    # Portable: the base is named as params name it, not by this machine's model-cache folder
    # (a fresh clone with another $POLYCHROMIC_CACHE would otherwise hash another adapter).
    assert cfg["base_model_name_or_path"] == params_for("model", params).base
    weights = _adapter(out)
    assert weights and all("lora_" in k for k in weights)  # no base weights in the out
    assert not list(out.glob("model*.safetensors"))
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["data"]["skipped_null_reference"] == 1
    assert set(metrics["train"]) == {
        "loss",
        "ce",
        "kl",
        "diversity",
        "reward",
        "grad_norm",
        "grad_norm_ce",
        "grad_norm_diversity",
        "grad_norm_kl",
        "onpolicy_gap",
    }  # no wall-clock key: the curves are a DVC output and must hash the same every run
    norms = (live / "plots" / "metrics" / "train" / "grad_norm_kl.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in norms] == ["step", "2"]  # measured on step 2 only
    rows = (live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss"] and len(rows) == 3
    assert set(metrics["val"]) == {"ce", "reward"}  # at the last step (val_every > max_steps)
    assert not (tmp_path / "models" / ".ckpt" / "polychromic").exists()
    # Where the steps' time went, over the whole run, on the closing line: the GPU sweeps run
    # without val lines (train.val_every=0), so the per-val-point split never showed there.
    took = [ln for ln in capsys.readouterr().out.splitlines() if "steps took" in ln]
    assert len(took) == 1 and "s/step over 2 steps: sampling " in took[0], took
    assert all(f"{k} " in took[0] for k in ("reward", "scoring", "fwd_bwd")), took


def _train_stage(tmp_path, name, **params):
    from lib.io import write_parquet
    from lib.schemas import EXAMPLES
    from stages import train_baseline

    d = tmp_path / name
    d.mkdir()
    data = d / "train.parquet"
    write_parquet(_df(6), data, EXAMPLES)
    path = _params(d, val_every=0, **params.pop("train", {}))
    p = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**p, **params}))
    out = d / "models" / "baseline"
    train_baseline.main(
        ["--train", str(data), "--out", str(out), "--params", str(path), "--no-progress"]
    )
    return (out / "adapter_model.safetensors").read_bytes()


def test_train_seed_replaces_the_top_level_seed_in_training(tmp_path):
    # The 3 training seeds of RESULTS.md hold the data and split (the top-level seed) fixed and
    # vary train.seed. With train.seed null the top-level seed trains (3 here); train.seed 3 under
    # top-level seed 7 must train the same bytes (7 never reaches training), and train.seed 4 not.
    # LoRA init and the data order are what the seed draws here (dropout 0, baseline).
    top3 = _train_stage(tmp_path, "top3", seed=3)
    seed3_under_7 = _train_stage(tmp_path, "t3", seed=7, train={"seed": 3})
    seed4 = _train_stage(tmp_path, "t4", seed=3, train={"seed": 4})
    assert seed3_under_7 == top3
    assert seed4 != top3


def test_load_in_4bit_cpu_one_step(tiny_model):
    pytest.importorskip("bitsandbytes")
    _, tok = tiny_model
    mp = params_for("model", base="tiny-random", device="cpu", load_in_4bit=True)
    base, _ = load_model(mp, tok)
    model = attach_lora(base, LORA, mp)
    examples, _ = build_examples(_df(2), tok, 32)
    tr = Trainer("baseline", model, tok, examples, replace(FAST, max_steps=1, batch_size=2), 0)
    m = tr.step()
    assert m["ce"] == m["ce"] and m["ce"] > 0
