"""How `Trainer.step` wires draw → reward → credit → objective → backward, on tiny-random (CPU).

For every system and objective, one real step's LoRA gradient (captured just before the optimizer
step, clipping off) must equal ∇(CE + λ·term + kl_coef·KL) built here from plain, unpacked
forwards: one forward per (prompt + reference) and per (prompt + sample), log-softmax by hand,
the samples re-drawn here from the seeds, the credit assembled here from the distance and credit
functions. Float64 model, LoRA B random (so the adapter and the KL have gradients), samples drawn
at T = 1 (a greedy tiny-random model only repeats a token and hides masking bugs).

Planted bugs each of these tests caught (checked once by hand, see the report of issue 15): the λ
term × 0 in the step; its sign flipped; the scorer returning −credit; multiplicative silently
using additive credit; gem training with plain CE; sample seeds ignoring the example; the packed
pass keeping LoRA dropout on (on-policy test).
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from lib.chat import IGNORE_INDEX
from lib.models import load_model
from lib.sampling import eos_ids, sample
from lib.train import Trainer, attach_lora, build_examples, packed_lm, sample_seed
from tests.test_train import FAST, GEM, LORA, MP, SEM, _df, replace

N, NEW, SEED = 3, 5, 11
TP = replace(FAST, batch_size=2, max_grad_norm=0.0, warmup_steps=0)
LOSS = replace(
    SEM,
    lambda_=0.7,
    kl_coef=0.3,
    num_samples=N,
    max_new_tokens=NEW,
    grad_norm_every=0,
    reward="auto",  # social → human_similarity
    passk_k=2,
    passk_threshold=None,
)


def _model(tok, dropout: float = 0.0):
    torch.manual_seed(0)
    model = attach_lora(load_model(MP, tok)[0], replace(LORA, dropout=dropout), MP).to(
        torch.float64
    )
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-zero B: the gradient reaches A, and π ≠ π_ref (the KL is live)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    return model


def _step_grads(tr: Trainer) -> tuple[dict[str, float], list[torch.Tensor]]:
    """One `tr.step()`; the LoRA gradient as the optimizer received it."""
    seen: list[list[torch.Tensor]] = []
    tr.optimizer.register_step_pre_hook(
        lambda opt, args, kw: seen.append([p.grad.detach().clone() for p in tr.params])
    )
    m = tr.step()
    return m, seen[0]


def _hooked_step_grads(tr: Trainer, handle) -> list[torch.Tensor]:
    """`_step_grads(tr)`'s gradient, with the hook `handle` removed afterwards."""
    try:
        return _step_grads(tr)[1]
    finally:
        handle.remove()


def _assert_grads_match(got: list[torch.Tensor], want: tuple[torch.Tensor, ...]) -> None:
    scale = max(float(w.abs().max()) for w in want)
    for a, b in zip(got, want, strict=True):
        assert float((a - b).abs().max()) <= 1e-6 * scale


def _token_logprobs(model, prompt: list[int], cont: list[int]) -> torch.Tensor:
    """log p(cont_t | prompt, cont_<t), one unpadded forward, (len(cont),)."""
    logits = model(input_ids=torch.tensor([prompt + cont])).logits[0]  # (P + L, V)
    lp = logits[len(prompt) - 1 : -1].log_softmax(-1)  # position t predicts token t + 1
    return lp.gather(-1, torch.tensor(cont)[:, None])[:, 0]


def _credit(objective: str, texts: list[list[str]], batch) -> torch.Tensor:
    """credit_i = g(Y) − g(Y₋ᵢ) by enumeration, g of the objective, r = human_similarity by hand."""
    from lib.embed import embed_tensor

    credit = torch.zeros(len(texts), N, dtype=torch.float64)
    for b, (group, e) in enumerate(zip(texts, batch, strict=True)):
        emb = embed_tensor(list(group)).double()  # (N, D) unit vectors
        refs = embed_tensor(list(e.references)).double()
        r = (emb @ refs.T).max(-1).values.clamp(0, 1).tolist()  # max cosine to a human reply
        delta = (1 - emb @ emb.T).clamp(0, 2)

        def g(keep: list[int], r: list[float] = r, delta: torch.Tensor = delta) -> float:
            pairs = list(itertools.combinations(keep, 2))
            d = sum(float(delta[i, j]) for i, j in pairs) / len(pairs)
            mean_r = sum(r[i] for i in keep) / len(keep)
            if objective == "additive":
                return d + mean_r
            if objective == "multiplicative":
                return mean_r * d
            subsets = list(itertools.combinations(keep, LOSS.passk_k))  # passk: E[max of k]
            return sum(max(r[i] for i in s) for s in subsets) / len(subsets)

        for i in range(N):
            credit[b, i] = g(list(range(N))) - g([j for j in range(N) if j != i])
    return credit


def _independent_loss(system, objective, model, tok, batch, step) -> torch.Tensor:
    """CE (or GEM) + λ·term + kl_coef·KL from plain forwards, samples re-drawn from the seeds."""
    ref_lp, ref_logits = [], []
    for e in batch:
        ref_lp.append(_token_logprobs(model, e.prompt_ids, e.target_ids))
        logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        ref_logits.append(logits[e.n_prompt - 1 : -1])  # (R, V): predicts each reference token
    if system == "gem":  # per token −log p(y*) + Σ_v q_v log p_v, q = sg(softmax(z/β))
        z = torch.cat(ref_logits)
        y = torch.tensor([t for e in batch for t in e.target_ids])
        logp = z.log_softmax(-1)
        q = (z.detach() / GEM.beta).softmax(-1)
        return (-logp.gather(-1, y[:, None])[:, 0] + (q * logp).sum(-1)).mean()
    ce = -torch.cat(ref_lp).mean()
    if system == "baseline":
        return ce
    seeds = [sample_seed(SEED, step, e.index, i) for e in batch for i in range(N)]
    model.eval()
    comps = sample(
        model,
        [e.prompt_ids for e in batch for _ in range(N)],
        seeds,
        max_new_tokens=NEW,
        eos_token_ids=eos_ids(tok, model),
        pad_token_id=tok.pad_token_id,
    )
    model.train()
    ids = [[c.token_ids for c in comps[b * N : (b + 1) * N]] for b in range(len(batch))]
    texts = [tok.batch_decode(g, skip_special_tokens=True) for g in ids]
    credit = _credit(objective, texts, batch)
    assert float(credit.abs().max()) > 1e-3, "a zero credit would hide sign and scale bugs"
    term, n_tok, sq = torch.zeros((), dtype=torch.float64), 0, []
    for b, e in enumerate(batch):
        for i, c in enumerate(ids[b]):
            lp = _token_logprobs(model, e.prompt_ids, c)
            with torch.no_grad(), model.disable_adapter():
                lp_ref = _token_logprobs(model, e.prompt_ids, c)
            term = term - credit[b, i] * lp.sum()
            n_tok += len(c)
            sq.append((lp - lp_ref) ** 2)
    kl = 0.5 * torch.cat(sq).mean()
    return ce + LOSS.lambda_ * term / n_tok + LOSS.kl_coef * kl, ids


CASES = [
    ("baseline", None),
    ("gem", None),
    ("polychromic", "additive"),
    ("polychromic", "multiplicative"),
    ("polychromic", "passk"),
]


# loss.kl_pass: the reference log-probs from a separate no-grad pass (auto on CPU) or fused into
# the packed pass as a second copy of the rows with the LoRA updates zeroed (auto on CUDA).
CASES += [("polychromic", "additive", "fused"), ("polychromic", "passk", "fused")]


@pytest.mark.parametrize(("system", "objective", "kl_pass"), [(*c, "auto")[:3] for c in CASES])
def test_step_gradient_equals_independent_objective_gradient(
    tiny_model, system, objective, kl_pass
):
    _, tok = tiny_model
    model = _model(tok)
    examples, _ = build_examples(_df(4), tok, 48)
    loss = replace(LOSS, objective=objective or "additive", kl_pass=kl_pass)
    tr = Trainer(system, model, tok, examples, TP, SEED, loss, GEM)
    batch = [examples[i] for i in tr.order.take(0, TP.batch_size)]

    params = tr.params
    out = _independent_loss(system, objective, model, tok, batch, step=0)
    total, ids = out if isinstance(out, tuple) else (out, None)
    want = torch.autograd.grad(total, params)
    m, got = _step_grads(tr)

    assert tr.seen_batches == [[e.index for e in batch]]
    scale = max(float(w.abs().max()) for w in want)
    assert scale > 0
    for a, b in zip(got, want, strict=True):
        assert float((a - b).abs().max()) <= 1e-6 * scale
    if system != "polychromic":
        return
    assert tr.last_draw.token_ids == ids  # the same samples, drawn from the same seeds
    # Seeds read back from the trainer: one per (example, sample), a function of
    # (seed, step, example, i), distinct across examples and samples ...
    seeds = tr.last_draw.seeds
    assert seeds == [[sample_seed(SEED, 0, e.index, i) for i in range(N)] for e in batch]
    assert len({s for row in seeds for s in row}) == len(batch) * N
    tr.step()  # ... and across steps
    later = {s for row in tr.last_draw.seeds for s in row}
    assert not later & {s for row in seeds for s in row}


@pytest.mark.parametrize("kl_pass", ["separate", "fused"])
def test_chunked_log_probs_give_the_same_step_without_whole_logits(
    tiny_model, monkeypatch, kl_pass
):
    # The CUDA path (packed_lm.logprob_chunk > 0): the LM head and its log-softmax 5 rows at a
    # time, recomputed in the backward. Forced here on CPU: the real step's gradient must still be
    # the independent objective's, and the head must never see more than 5 packed rows (2-D
    # inputs; the sampler's decode calls are 3-D), forward or recompute.
    from lib.train import packed_lm

    monkeypatch.setattr(packed_lm, "logprob_chunk", lambda device, sharded: 5)
    _, tok = tiny_model
    model = _model(tok)
    examples, _ = build_examples(_df(4), tok, 48)
    loss = replace(LOSS, kl_pass=kl_pass)
    tr = Trainer("polychromic", model, tok, examples, TP, SEED, loss, GEM)
    batch = [examples[i] for i in tr.order.take(0, TP.batch_size)]
    want = torch.autograd.grad(
        _independent_loss("polychromic", "additive", model, tok, batch, step=0)[0], tr.params
    )
    rows: list[int] = []
    head = model.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(
        lambda _m, args, _out: rows.append(args[0].shape[0]) if args[0].dim() == 2 else None
    )
    _assert_grads_match(_hooked_step_grads(tr, hook), want)
    assert rows and max(rows) <= 5, rows


def test_logprob_chunk_chunks_on_cuda_only_and_never_under_fsdp():
    from lib.train.packed_lm import LOGPROB_CHUNK_ROWS, logprob_chunk

    assert logprob_chunk(torch.device("cuda"), sharded=False) == LOGPROB_CHUNK_ROWS
    assert logprob_chunk(torch.device("cuda"), sharded=True) == 0
    assert logprob_chunk(torch.device("cpu"), sharded=False) == 0


def test_polychromic_terms_are_each_visible_in_the_gradient(tiny_model):
    # Guard for the test above: the λ term and the KL each move the gradient far beyond its
    # tolerance, so dropping either (or flipping a sign) cannot pass unnoticed.
    _, tok = tiny_model
    model = _model(tok)
    examples, _ = build_examples(_df(4), tok, 48)
    grads = {}
    for name, loss in {
        "all": LOSS,
        "no_lambda": replace(LOSS, lambda_=0.0),
        "no_kl": replace(LOSS, kl_coef=0.0),
    }.items():
        tr = Trainer("polychromic", model, tok, examples, TP, SEED, loss, GEM)
        grads[name] = torch.cat([g.reshape(-1) for g in _step_grads(tr)[1]])
        model.zero_grad(set_to_none=True)
    scale = float(grads["all"].abs().max())
    assert float((grads["all"] - grads["no_lambda"]).abs().max()) > 1e-3 * scale
    assert float((grads["all"] - grads["no_kl"]).abs().max()) > 1e-3 * scale


def test_sampler_logprob_equals_loss_logprob_at_step_start(tiny_model):
    # On-policy identity: log π recorded while sampling (eval mode) equals log π in the loss at
    # the start of the step, although LoRA dropout is 0.1 (the packed pass turns it off too).
    _, tok = tiny_model
    model = _model(tok, dropout=0.1)
    examples, _ = build_examples(_df(4), tok, 48)
    tr = Trainer("polychromic", model, tok, examples, TP, SEED, LOSS, GEM)
    seen = []
    packed = tr.packed_pass
    tr.packed_pass = lambda *a, **k: seen.append(packed(*a, **k)) or seen[-1]
    m = tr.step()
    logp = seen[0].logp.detach()
    assert logp.dtype == torch.float64 and bool((logp < -1.0).all())  # real, non-trivial log-probs
    assert float((tr.last_draw.logprob - logp).abs().max()) <= 1e-6
    assert m["onpolicy_gap"] <= 1e-6


@pytest.mark.parametrize("kl_pass", ["separate", "fused"])
def test_kl_is_zero_at_init_and_logged(tiny_model, kl_pass):
    _, tok = tiny_model
    torch.manual_seed(0)
    model = attach_lora(load_model(MP, tok)[0], replace(LORA, dropout=0.05), MP)  # B = 0
    examples, _ = build_examples(_df(4), tok, 48)
    loss = replace(LOSS, kl_pass=kl_pass)
    tr = Trainer("polychromic", model, tok, examples, replace(TP, lr=1e-2), SEED, loss, GEM)
    first = tr.step()
    assert first["kl"] == 0.0  # π = π_ref exactly: the same pack, the adapter adding zeros
    second = tr.step()
    assert second["kl"] > 0.0  # after one update π has moved


def test_ce_ignores_prompt_tokens_in_the_independent_reference(tiny_model):
    # The independent CE above must score exactly the labelled tokens (guards the test itself).
    _, tok = tiny_model
    (e, *_), _ = build_examples(_df(1), tok, 48)
    assert [t for t, lab in zip(e.input_ids, e.labels, strict=True) if lab != IGNORE_INDEX] == (
        e.target_ids
    )


PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
BODY = "    return a + b\n"


def _code_df(n: int = 2):
    """MBPP-style rows in HumanEval form (lib/domains/code.py): input = meta prompt, reference = body."""
    import json

    import pandas as pd

    meta = {
        "source": "mbpp",
        "task_id": "MBPP/0",
        "entry_point": "add",
        "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
        "setup": "",
        "prompt": PROMPT,
        "test": "",
    }
    return pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "domain": "code",
            "input": [PROMPT] * n,
            "reference": [BODY] * n,
            "group": [f"g{i}" for i in range(n)],
            "meta": json.dumps(meta),
            "split": "train",
            "references": [[BODY]] * n,
        }
    )


def test_code_reward_runs_prompt_plus_sample_like_the_evaluation(tiny_model):
    # The sample continues the HumanEval-form prompt: the reference body passes every test, a body
    # that is wrong on one test passes half, prose and a broken body pass none.
    from lib.train import Draw

    _, tok = tiny_model
    examples, _ = build_examples(_code_df(1), tok, 64)
    loss = replace(LOSS, diversity="functional", objective="additive", num_samples=4)
    tr = Trainer("polychromic", _model(tok), tok, examples, TP, SEED, loss, GEM)
    texts = [[BODY, "    return a + b if a else 1\n", "Add the two numbers.", "    return (a +\n"]]
    draw = Draw([[0] * 4], [[[1]] * 4], texts, torch.zeros(1, 4, dtype=torch.float64))
    credit = tr.scorer.submit(examples, draw).result()
    # the second body: add(1, 2) = 3 passes, add(0, 0) = 1 fails
    assert credit.reward.tolist() == [[1.0, 0.5, 0.0, 0.0]]
    # ... behaviours: the reference, the wrong body, and two non-programs (one class)
    assert float(credit.diversity[0]) == pytest.approx(5 / 6)


def test_code_reward_runs_in_the_background_of_the_packed_forward(tiny_model):
    # On code the sandbox reward is submitted before the packed forward and collected after it, so
    # execution overlaps the forward; functional diversity comes from the same executions.
    _, tok = tiny_model
    model = _model(tok)
    examples, _ = build_examples(_code_df(), tok, 64)
    loss = replace(LOSS, diversity="functional", objective="additive")
    tr = Trainer("polychromic", model, tok, examples, TP, SEED, loss, GEM)
    assert tr.scorer.reward.name == "code_tests"
    events: list[str] = []
    submit, packed = tr.scorer.reward.submit, tr.packed_pass

    def traced_submit(*a, **k):
        events.append("reward submitted")
        fut = submit(*a, **k)
        result = fut.result

        def traced_result(*ra, **rk):
            events.append("reward collected")
            return result(*ra, **rk)

        fut.result = traced_result
        return fut

    def traced_packed(*a, **k):
        events.append("packed forward")
        return packed(*a, **k)

    tr.scorer.reward.submit, tr.packed_pass = traced_submit, traced_packed
    m = tr.step()
    assert events == ["reward submitted", "packed forward", "reward collected"]
    # tiny-random writes no program: every sample scores 0 and behaves alike (one class, D = 0)
    assert m["reward"] == 0.0 and m["diversity"] == 0.0
    assert m["time_reward"] > 0.0


def test_functional_diversity_needs_the_code_reward(tiny_model):
    from lib.config import ParamsError

    _, tok = tiny_model
    examples, _ = build_examples(_df(2), tok, 48)
    with pytest.raises(ParamsError, match="functional needs the code_tests reward"):
        Trainer(
            "polychromic",
            _model(tok),
            tok,
            examples,
            TP,
            SEED,
            replace(LOSS, diversity="functional"),
            GEM,
        )


def test_tempered_or_truncated_training_samples_fail_clearly():
    from lib.config import ParamsError

    with pytest.raises(ParamsError, match=r"loss.temperature = 0.7, loss.top_p = 1.0"):
        replace(LOSS, temperature=0.7)
    with pytest.raises(ParamsError, match=r"loss.top_p = 0.9.*off-policy"):
        replace(LOSS, top_p=0.9)
    with pytest.raises(ParamsError, match=r"loss.passk_k = 3"):
        replace(LOSS, objective="passk", passk_k=3)


def _checkpointed(model):
    model.get_base_model().gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    model.train()
    return model


def test_fused_kl_refuses_gradient_checkpointing(tiny_model):
    # The fused pass scales the copy's LoRA update with hooks that are gone when checkpointing
    # recomputes the layers in the backward; the H200 run died there with a CheckpointError at
    # step 1 (0.5B coder, model.gradient_checkpointing true, kl_pass auto → fused on CUDA).
    _, tok = tiny_model
    model = _checkpointed(_model(tok))
    examples, _ = build_examples(_df(4), tok, 48)
    fused = replace(LOSS, kl_pass="fused")
    with pytest.raises(ValueError, match="kl_pass fused cannot run with model.gradient_check"):
        Trainer("polychromic", model, tok, examples, TP, SEED, fused, GEM)
    # No KL pass runs at kl_coef 0, nor in baseline's step: nothing to refuse there.
    Trainer("polychromic", model, tok, examples, TP, SEED, replace(fused, kl_coef=0.0), GEM)
    Trainer("baseline", model, tok, examples, TP, SEED, fused, GEM)


def test_auto_kl_pass_is_separate_under_gradient_checkpointing_on_cuda(tiny_model):
    _, tok = tiny_model
    examples, _ = build_examples(_df(4), tok, 48)
    fused = {}
    for ckpt in (False, True):
        model = _model(tok)
        tr = Trainer("polychromic", _checkpointed(model) if ckpt else model, tok, examples, TP,
                     SEED, replace(LOSS, kl_pass="auto"), GEM)  # fmt: skip
        tr.device = torch.device("cuda")  # the decision only: nothing runs on it
        fused[ckpt] = tr._fused_kl()
    assert fused == {False: True, True: False}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_step_under_gradient_checkpointing_equals_independent_objective_gradient(
    tiny_model, monkeypatch, dropout
):
    # The whole step (draw, reward, packed pass, KL, backward) with every layer recomputed in the
    # backward: the gradient the optimizer gets is still ∇ of the objective built here. LoRA
    # dropout > 0 (nn.Dropout, not 0's nn.Identity): the packed pass's forward runs it off, so the
    # recompute must too; the H200 run died at step 1 with a CheckpointError (the dropout masks)
    # when the backward ran with it back on. The objective is built on a dropout-free twin (the
    # same weights): the on-policy step's gradient has no dropout in it.
    _, tok = tiny_model
    model, twin = _model(tok, dropout), _model(tok)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert bool(drops) == (dropout > 0)
    examples, _ = build_examples(_df(4), tok, 48)
    tr = Trainer("polychromic", model, tok, examples, TP, SEED, replace(LOSS, kl_pass="auto"), GEM)
    batch = [examples[i] for i in tr.order.take(0, TP.batch_size)]
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(tr.params, twin_params, strict=True))
    want = torch.autograd.grad(
        _independent_loss("polychromic", "additive", twin, tok, batch, step=0)[0], twin_params
    )
    _checkpointed(model)
    # The attention kernels too: on CUDA the packed pass picks sdpa's backends in a context
    # (`packed_lm.attention_backends`); a recompute outside it took another backend, whose saved
    # tensors differ (the H200's second CheckpointError). A CPU has one backend, so the context's
    # depth is what is checked: it must be entered in the forward and still be in the backward.
    depth = [0]

    @contextlib.contextmanager
    def backends(device):
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1

    monkeypatch.setattr(packed_lm, "attention_backends", backends)
    recomputed: list[tuple[bool, int]] = []
    mlp = model.get_base_model().model.layers[0].mlp  # transformers checkpoints layer.forward
    hook = mlp.register_forward_pre_hook(
        lambda *_: recomputed.append((torch.is_grad_enabled(), depth[0]))
    )
    _assert_grads_match(_hooked_step_grads(tr, hook), want)
    # checkpointing was live: layer 0's MLP ran again inside the backward (grad mode there)
    with_grad = [d for g, d in recomputed if g]
    assert len(with_grad) >= 2, recomputed
    assert all(d > 0 for d in with_grad), recomputed  # forward and recompute: the same kernels
    assert depth == [0]
    assert all(m.training for m in drops)  # dropout back on after the step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checkpointed_step_on_cuda_gets_the_plain_steps_gradient(tiny_model):
    # The H200 (0.5B coder): the polychromic step under gradient checkpointing died at step 1
    # with a CheckpointError, twice: dropout masks in the recompute, then another sdpa backend
    # there. On CUDA, with the graphed sampler, the chunked LM head and the separate KL pass, the
    # checkpointed step at LoRA dropout 0.1 runs and gets the plain step's gradient (the same
    # samples: the same weights and seeds).
    _, tok = tiny_model
    examples, _ = build_examples(_df(4), tok, 48)
    grads = {}
    for ckpt in (False, True):
        model = _model(tok, dropout=0.1).to(torch.float32).cuda()
        tr = Trainer("polychromic", _checkpointed(model) if ckpt else model, tok, examples, TP,
                     SEED, replace(LOSS, kl_pass="separate"), GEM)  # fmt: skip
        assert tr.device.type == "cuda"
        grads[ckpt] = _step_grads(tr)[1]
    for plain, ckpt in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(plain, ckpt, rtol=1e-4, atol=1e-7), float((plain - ckpt).abs().max())
