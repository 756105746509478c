"""Val curves (lib/train/validate.py): what they measure, and that measuring changes nothing.

val/ce is checked against one plain, unpacked forward per val input (log-softmax by hand); val/reward
against samples re-drawn here from the documented seeds (seed, "val-sample", step, input, i) and
scored by hand (max MiniLM cosine to a human reply, clamped to [0, 1]).
"""

from __future__ import annotations

import pytest
import torch

from lib.embed import embed_tensor
from lib.sampling import eos_ids, sample
from lib.seeds import rng_seed
from lib.train import Trainer, build_examples
from lib.train.validate import ValSet, evaluate
from tests.test_train import FAST, LEX, LORA, _adapter, _df, _run, replace
from tests.test_train_step import SEED, _model, _token_logprobs

TP = replace(FAST, batch_size=2)
LOSS = replace(LEX, reward="auto", diversity="semantic", max_new_tokens=5, num_samples=2)


def _val_df():
    df = _df(8)
    return df.assign(split="val", id=[f"v{i}" for i in range(8)])


def test_val_set_keeps_the_first_distinct_inputs_in_file_order(tiny_model):
    _, tok = tiny_model
    df = _val_df()
    df.loc[3, "input"] = df.loc[1, "input"]  # a repeat of row 1's input: skipped
    val = ValSet.build(df, tok, 48, inputs=4, where="val")
    assert [e.index for e in val.examples] == [0, 1, 2, 4]


def test_val_ce_and_reward_equal_plain_forwards_and_redrawn_samples(tiny_model):
    _, tok = tiny_model
    model = _model(tok, dropout=0.1)  # float64, LoRA B random; dropout must be off in val CE
    train_examples, _ = build_examples(_df(4), tok, 48)
    tr = Trainer("polychromic", model, tok, train_examples, TP, SEED, LOSS)
    tr.step_idx = 7  # the seeds name the step
    val = ValSet.build(_val_df(), tok, 48, inputs=3, where="val")
    model.train()
    got = evaluate(tr, val, samples=2)
    assert tr.step_idx == 7 and model.training  # handed back as it was

    model.eval()
    nll = torch.cat([-_token_logprobs(model, e.prompt_ids, e.target_ids) for e in val.examples])
    assert abs(got["val/ce"] - float(nll.detach().mean())) <= 1e-9

    rewards = []
    for e in val.examples:
        seeds = [rng_seed(SEED, "val-sample", 7, e.index, i) for i in range(2)]
        comps = sample(
            model,
            [e.prompt_ids] * 2,
            seeds,
            max_new_tokens=5,
            eos_token_ids=eos_ids(tok, model),
            pad_token_id=tok.pad_token_id,
        )
        texts = tok.batch_decode([c.token_ids for c in comps], skip_special_tokens=True)
        emb, refs = embed_tensor(texts).double(), embed_tensor(list(e.references)).double()
        rewards += (emb @ refs.T).max(-1).values.clamp(0, 1).tolist()
    assert abs(got["val/reward"] - sum(rewards) / len(rewards)) <= 1e-6


def test_val_draws_fill_the_training_decoders_rows_and_drop_the_fill(tiny_model, monkeypatch):
    # On a GPU the trainer's static decoder takes exactly B·N rows; a val draw of any other size
    # samples eagerly (~10x slower). Forced here: 4 rows at 2 samples = 2 inputs a draw, so the
    # 3 val inputs go as [2, 1 + 1 fill]; the fill's samples must not reach val/reward.
    _, tok = tiny_model
    model = _model(tok)
    train_examples, _ = build_examples(_df(4), tok, 48)
    val = ValSet.build(_val_df(), tok, 48, inputs=3, where="val")
    tr = Trainer("polychromic", model, tok, train_examples, TP, SEED, LOSS)
    tr.step_idx = 7
    plain = evaluate(tr, val, samples=2)  # CPU: eager draws of B = 2 inputs, [2, 1]

    monkeypatch.setattr(Trainer, "draw_rows", property(lambda self: 4))
    monkeypatch.setattr(Trainer, "_static_decoder", lambda self, rows: None)  # eager on CPU
    sizes = []
    draw = tr.draw
    monkeypatch.setattr(tr, "draw", lambda batch, *a: sizes.append(len(batch)) or draw(batch, *a))
    filled = evaluate(tr, val, samples=2)
    assert sizes == [2, 2]
    assert filled["val/reward"] == pytest.approx(plain["val/reward"], abs=1e-9)
    assert filled["val/ce"] == plain["val/ce"]


def test_val_evaluations_leave_the_adapter_bytes_unchanged_and_log_curves(
    tmp_path, tiny_model, capsys
):
    # Dropout on: an evaluation that drew from the training RNG (or left dropout on) would move
    # every later mask, and the adapter with it.
    _, tok = tiny_model
    lora = replace(LORA, dropout=0.1)
    plain = _run(tmp_path, "plain", "polychromic", tok, lora=lora, loss=LOSS)
    live = tmp_path / "live"
    tp = replace(FAST, val_every=2, val_inputs=3)
    watched = _run(
        tmp_path,
        "watched",
        "polychromic",
        tok,
        lora=lora,
        loss=LOSS,
        tp=tp,
        val_df=_val_df(),
        live_dir=live,
    )
    assert plain.keys() == watched.keys()
    assert all(torch.equal(plain[k], watched[k]) for k in plain)
    # Each val line says where the steps since the last one went (3 steps: val at 2, then 3).
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("step ")]
    assert lines[-2].startswith("step 2: val/ce ") and "s/step over 2 steps: sampling " in lines[-2]
    assert lines[-1].startswith("step 3: val/ce ") and "s/step over 1 steps: sampling " in lines[-1]
    assert "fwd_bwd " in lines[-1] and "; val " in lines[-1]
    for name in ("ce", "reward"):
        rows = (live / "plots" / "metrics" / "val" / f"{name}.tsv").read_text().splitlines()
        assert [r.split("\t")[0] for r in rows] == ["step", "2", "3"]  # every 2 steps and the last
    assert _adapter(tmp_path / "watched")


def test_val_every_without_the_val_split_fails_before_training(tmp_path, tiny_model):
    _, tok = tiny_model
    with pytest.raises(ValueError, match=r"train.val_every > 0 needs the val split \(--val\)"):
        _run(tmp_path, "x", "baseline", tok, tp=replace(FAST, val_every=1))
