"""Sampling throughput: naive loop vs `num_return_sequences` vs the generate stage's batched paths.

    .venv/bin/python -m bench.generate [--model smollm2-135m-instruct|tiny-random|qwen3-8b-random|DIR]
        [--device cpu|cuda] [--prompts 8] [--samples 10] [--max-new-tokens 32] [--batch-size 80]
        [--methods naive,nrs,stage,graph] [--load-in-4bit] [--random-prompts]

Same prompts, same sampling settings (temperature 0.7, top_p 0.9, no top-k), every row runs to
exactly `--max-new-tokens` (HF: `min_new_tokens` = max; ours: no stop token), and tokens/s counts
the tokens actually generated:
(a) naive: one `model.generate` call per sample (what lm-evaluation-harness `repeats` does);
(b) nrs: one `model.generate(num_return_sequences=samples)` call per prompt;
(c) stage: `lib.generate.plan` batches (length-sorted, `--batch-size` rows a call) through
    `lib.sampling.sample` (per-row seeds, shared prefill of a prompt's samples, KV cache): the
    eager path, `generate.decode: eager` and the CPU's;
(d) graph: the same batches through the stage's `BatchSampler` on CUDA (`generate.decode: auto`):
    `lib.sampling.StaticDecoder`, static KV cache, one CUDA graph per decode step. Each timed
    call builds its decoders afresh, so the one-off capture is inside the timing.
    `graph_greedy` is (d) at temperature 0: the difference is the top-p sampler's share.
(a) can be limited to the first `--naive-prompts` prompts (a rate is a rate). On a GPU the first
large call pays one-off allocator growth: use `--repeats 2` (best of 2).
`qwen3-8b-random`: Qwen3ForCausalLM from Qwen3-8B's config with random bf16 weights, random
prompt token ids (no tokenizer needed); for GPU scale only. A checkpoint folder (e.g. from
bench/make_random_model.py) with `--load-in-4bit` is the paper profile's NF4 model, loaded through
`lib.models.load_model` as the stage loads it; `--random-prompts` gives it the same random prompts.
On CUDA the table ends with each path's share of the limit: per decode step the weights' bytes at
4.8 TB/s plus 2 FLOP per matmul weight and row at 790 TFLOP/s (the H200's measured copy and bf16
rates, bench/README.md); and greedy graphed tokens are compared with the eager path's.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import pandas as pd
import torch

from bench.draw import median_ms
from lib.config import params_for
from lib.generate import BatchSampler, Prompt, plan

QUESTIONS = [
    "What is the capital of France?",
    "hey, how was your weekend? did you end up going to the lake with your cousins or not?",
    "Write a haiku about the first snow of winter.",
    "Who wrote Pride and Prejudice?",
    "i just got a puppy and she won't stop chewing my shoes, any tips? "
    "I've tried toys and spray but nothing works and she is only ten weeks old",
    "Explain in simple words why the sky is blue during the day and red at sunset.",
    "lol same",
    "Write the opening line of a novel about a lighthouse keeper who finds a message in a bottle "
    "that seems to have been written by her future self.",
]


def qwen3_8b_random(device: torch.device) -> torch.nn.Module:
    from shapes import QWEN3_8B_SHAPES
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        **QWEN3_8B_SHAPES,
        eos_token_id=151645,
        pad_token_id=151643,
        bos_token_id=151643,
    )
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def random_prompts(n: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    lengths = [24 + (37 * i) % 97 for i in range(n)]
    return [torch.randint(0, min(vocab, 150000), (k,), generator=g).tolist() for k in lengths]


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, list[list[int]], int]:
    """(model, prompt token ids, pad id)."""
    device = torch.device(args.device)
    if args.model == "qwen3-8b-random":
        return qwen3_8b_random(device), random_prompts(args.prompts, 150000), 151643
    from lib.chat import chat_prompt_ids
    from lib.models import load_model

    dtype = "bfloat16" if args.device.startswith("cuda") else "auto"
    model, tok = load_model(
        params_for(
            "model",
            base=args.model,
            device=args.device,
            load_in_4bit=args.load_in_4bit,
            dtype=dtype,
        )
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    if args.random_prompts:
        return model, random_prompts(args.prompts, model.config.vocab_size), pad
    texts = [
        QUESTIONS[i % len(QUESTIONS)] + (f" ({i})" if i >= len(QUESTIONS) else "")
        for i in range(args.prompts)
    ]
    return model, [chat_prompt_ids(tok, t) for t in texts], pad


def hf_kwargs(args: argparse.Namespace, pad: int) -> dict:
    return dict(
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=0,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        pad_token_id=pad,
    )


def run_naive(model, prompts, args, pad) -> tuple[int, int]:
    tokens = calls = 0
    device = next(model.parameters()).device
    for p in prompts[: args.naive_prompts]:
        ids = torch.tensor([p], device=device)
        for _ in range(args.samples):
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **hf_kwargs(args, pad))
            tokens += out.shape[1] - ids.shape[1]
            calls += 1
    return tokens, calls


def run_nrs(model, prompts, args, pad) -> tuple[int, int]:
    tokens = calls = 0
    device = next(model.parameters()).device
    for p in prompts:
        ids = torch.tensor([p], device=device)
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            num_return_sequences=args.samples,
            **hf_kwargs(args, pad),
        )
        tokens += (out.shape[1] - ids.shape[1]) * out.shape[0]
        calls += 1
    return tokens, calls


def _stage_batches(prompts, args):
    test = pd.DataFrame(
        {"id": [f"p{i}" for i in range(len(prompts))], "domain": ["bench"] * len(prompts)}
    )
    gp = params_for(
        "generate",
        num_samples=args.samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens={"bench": args.max_new_tokens},
        batch_size=args.batch_size,
    )
    return plan(test, [Prompt("", p, None) for p in prompts], gp, seed=0)


def _run_batches(sampler, prompts, args, pad, temperature=None) -> tuple[int, int]:
    tokens = calls = 0
    outs = []
    for batch in _stage_batches(prompts, args):
        comps = sampler(
            [prompts[j.row] for j in batch],
            [j.seed for j in batch],
            args.max_new_tokens,
            # no stop token: every row runs the full length, like min_new_tokens
            eos_token_ids=[-1],
            pad_token_id=pad,
            temperature=args.temperature if temperature is None else temperature,
            top_p=args.top_p,
        )
        tokens += sum(len(c.token_ids) for c in comps)
        calls += 1
        outs += [((j.row, j.seed), c.token_ids) for j, c in zip(batch, comps, strict=True)]
    args.last_outputs = dict(outs)
    return tokens, calls


def run_stage(model, prompts, args, pad, temperature=None) -> tuple[int, int]:
    return _run_batches(BatchSampler(model, "eager"), prompts, args, pad, temperature)


def run_graph(model, prompts, args, pad, temperature=None) -> tuple[int, int]:
    return _run_batches(BatchSampler(model, "auto"), prompts, args, pad, temperature)


def run_graph_before(model, prompts, args, pad) -> tuple[int, int]:
    """The graphed stage path as it was before the decode kernels and the rejection draw:
    transformers' attention (cuDNN sdpa) and RMSNorm modules, and `draw` with its host syncs."""
    import lib.sampling
    import lib.static_decoder

    kernels, by_rejection = lib.static_decoder.CUDA_DECODE_KERNELS, lib.sampling._by_rejection
    lib.static_decoder.CUDA_DECODE_KERNELS = False
    lib.sampling._by_rejection = lambda device, top_p: False
    try:
        return _run_batches(BatchSampler(model, "auto"), prompts, args, pad)
    finally:
        lib.static_decoder.CUDA_DECODE_KERNELS = kernels
        lib.sampling._by_rejection = by_rejection


def run_graph_greedy(model, prompts, args, pad) -> tuple[int, int]:
    return run_graph(model, prompts, args, pad, temperature=0.0)


_KEPT: dict[int, BatchSampler] = {}


def run_graph_reused(model, prompts, args, pad) -> tuple[int, int]:
    """(d) with its decoders kept across calls, as the stage keeps one for same-shaped batches:
    best of 2 is then the steady state, no capture."""
    sampler = _KEPT.setdefault(id(model), BatchSampler(model, "auto"))
    return _run_batches(sampler, prompts, args, pad)


def step_costs(model, prompts, args, pad) -> str:
    """Where a graphed step's time goes: one graph replay of the model's decode step, and the
    top-p draw over the logits (flat random-weight distributions need the full-vocabulary
    nucleus; a peaked one fits in the top 256), each the median of CUDA-event timings: `draw`
    and `draw_rejection` (what `_Rows` draws with on CUDA), and its sync-free rounds alone."""
    from lib.draw import rejection_rounds
    from lib.sampling import draw, draw_rejection

    sampler = BatchSampler(model, "auto")
    _run_batches(sampler, prompts, args, pad, temperature=0.0)
    dec = sampler._decoder
    rows = dec.rows

    def ms(fn: Callable[[], object]) -> float:
        return median_ms(fn, logits.device, 10)

    logits = dec._run().float()
    flat = torch.softmax(logits / args.temperature, -1)
    g = torch.Generator(device=logits.device).manual_seed(0)
    peaked = torch.softmax(6 * torch.randn(logits.shape, device=logits.device, generator=g), -1)
    u = torch.rand(rows, device=logits.device, dtype=torch.float64, generator=g)
    top_p = args.top_p

    def draws(probs: torch.Tensor) -> str:
        return (
            f"draw {ms(lambda: draw(probs, u, top_p)):.2f} ms, "
            f"draw_rejection {ms(lambda: draw_rejection(probs, u, top_p)):.2f} ms "
            f"(rounds alone {ms(lambda: rejection_rounds(probs, u, top_p)):.2f} ms)"
        )

    return (
        f"per step at {rows} rows: graph replay {ms(dec._run):.2f} ms; top-p {top_p}: "
        f"flat (these logits) {draws(flat)}; peaked {draws(peaked)}; greedy argmax "
        f"{ms(lambda: logits.argmax(-1)):.2f} ms; softmax "
        f"{ms(lambda: torch.softmax(logits / args.temperature, -1)):.2f} ms"
    )


def phases(model, prompts, args, pad, calls: int = 3) -> str:
    """Where a graphed call's time goes, for `calls` consecutive calls on one `BatchSampler`
    (call 1 builds the decoder and captures its step; later calls reuse it): wall seconds of the
    prefill, the decode steps (the first of a decoder includes its capture) and the draws with
    their bookkeeping (`_Rows.step`), each phase fenced by a device synchronise (so the parts add
    up to a little more than an unfenced call)."""
    import lib.static_decoder as sd

    spent: dict[str, float] = {}

    def fenced(name: str, fn: Callable) -> Callable:
        def run(*a, **k):
            torch.cuda.synchronize()
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                torch.cuda.synchronize()
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t

        return run

    patched = {
        (sd, "_prefill"): sd._prefill,
        (sd.StaticDecoder, "_fill_cache"): sd.StaticDecoder._fill_cache,
        (sd, "packed_prefill"): sd.packed_prefill,
        (sd.StaticDecoder, "_run"): sd.StaticDecoder._run,
        (sd._Rows, "step"): sd._Rows.step,
    }
    names = {
        "_prefill": "prefill",
        "_fill_cache": "prefill",
        "packed_prefill": "prefill",
        "_run": "decode",
        "step": "draw",
    }
    for (owner, attr), fn in patched.items():
        setattr(owner, attr, fenced(names[attr], fn))
    lines = []
    try:
        sampler = BatchSampler(model, "auto")
        for call in range(1, calls + 1):
            spent.clear()
            torch.cuda.synchronize()
            t = time.perf_counter()
            tokens, _ = _run_batches(sampler, prompts, args, pad)
            torch.cuda.synchronize()
            secs = time.perf_counter() - t
            parts = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in spent.items())
            rest = secs - sum(spent.values())
            lines.append(
                f"call {call}: {secs * 1e3:.0f} ms, {tokens / secs:,.0f} tok/s ({parts}, "
                f"other {rest * 1e3:.0f} ms)"
            )
    finally:
        for (owner, attr), fn in patched.items():
            setattr(owner, attr, fn)
    return "phases of one BatchSampler's calls: " + "; ".join(lines)


def limit_tok_s(model: torch.nn.Module, rows: int) -> float:
    """Tokens/s if a decode step of `rows` rows cost only its weight bytes at 4.8 TB/s plus its
    matmul FLOPs at 790 TFLOP/s (the H200's measured rates)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    cfg = base.config
    # Matmul weights from the shapes (a 4-bit parameter's numel counts packed bytes; the input
    # embedding is a lookup, not a matmul).
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    matmul = n * (h * (q + 2 * kv) + q * h + 3 * h * i) + h * cfg.vocab_size
    step_s = weight_bytes / 4.8e12 + 2 * matmul * rows / 790e12
    return rows / step_s


def greedy_agreement(model, prompts, args, pad) -> str:
    """Greedy tokens of the graphed path against the eager path's, and both against the argmax of
    a teacher-forced eager forward over prompt + completion (32 rows)."""
    sub = prompts[: max(1, 32 // args.samples)]
    one = argparse.Namespace(**{**vars(args), "samples": min(args.samples, 32)})
    run_stage(model, sub, one, pad, temperature=0.0)
    eager = one.last_outputs
    run_graph(model, sub, one, pad, temperature=0.0)
    graph = one.last_outputs
    # The eager path against itself in batches of 10 instead of 30: bf16 kernels of another
    # batch size round differently, which is the floor for any two paths.
    ten = argparse.Namespace(**{**vars(one), "batch_size": 10})
    run_stage(model, sub, ten, pad, temperature=0.0)
    total = sum(len(v) for v in eager.values())

    def agree(x, y) -> int:
        return sum(a == b for k in x for a, b in zip(x[k], y[k], strict=True))

    same, floor = agree(eager, graph), agree(eager, ten.last_outputs)

    dev = next(model.parameters()).device

    def teacher(outs) -> float:
        hits = n = 0
        for (row, _), toks in outs.items():
            ids = torch.tensor([sub[row] + toks], device=dev)
            with torch.no_grad():
                ref = model(input_ids=ids).logits[0, len(sub[row]) - 1 : -1].argmax(-1)
            hits += int((ref == ids[0, len(sub[row]) :]).sum())
            n += len(toks)
        return hits / n

    return (
        f"greedy, {len(eager)} rows: graphed tokens equal to eager (batch 30) {same}/{total} "
        f"({same / total:.3f}); eager in batches of 10 equal to eager in one of 30 {floor}/{total} "
        f"({floor / total:.3f}); "
        f"= argmax of an eager teacher-forced forward: eager {teacher(eager):.3f}, "
        f"graphed {teacher(graph):.3f} (near-ties of random bf16 weights flip both)"
    )


def timed(fn: Callable, *a) -> tuple[int, int, float]:
    dev = next(a[0].parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    tokens, calls = fn(*a)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return tokens, calls, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=80, help="stage path: rows per sampler call")
    ap.add_argument(
        "--naive-prompts", type=int, default=None, help="limit (a) to the first N prompts"
    )
    ap.add_argument("--methods", default="naive,nrs,stage")
    ap.add_argument("--load-in-4bit", action="store_true", help="NF4 (a checkpoint folder)")
    ap.add_argument("--random-prompts", action="store_true", help="random ids, 24-117 tokens")
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings per method")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    args = ap.parse_args(argv)
    args.naive_prompts = args.naive_prompts or args.prompts

    torch.manual_seed(0)
    model, prompts, pad = load(args)
    methods = {
        "naive": run_naive,
        "nrs": run_nrs,
        "stage": run_stage,
        "graph": run_graph,
        "graph_before": run_graph_before,
        "graph_greedy": run_graph_greedy,
        "graph_reused": run_graph_reused,
    }
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    # Warm-up (allocator, kernels, lazy init) on one short prompt, outside the timings.
    warm = argparse.Namespace(
        **{**vars(args), "max_new_tokens": 2, "samples": 2, "naive_prompts": 1}
    )
    for m in chosen:
        methods[m](model, prompts[:1], warm, pad)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()

    rows = []
    for m in chosen:
        tokens, calls, secs = min(
            (timed(methods[m], model, prompts, args, pad) for _ in range(args.repeats)),
            key=lambda r: r[2],
        )
        rows.append((m, calls, tokens, secs, tokens / secs))
    ref_name = "nrs" if any(r[0] == "nrs" for r in rows) else rows[0][0]
    ref = next(r[4] for r in rows if r[0] == ref_name)
    dev = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or "cpu"
    )
    print(
        f"\nmodel {args.model} on {args.device} ({dev}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads); {args.prompts} prompts x {args.samples} samples x "
        f"{args.max_new_tokens} new tokens, T={args.temperature}, top_p={args.top_p}, "
        f"stage batch {args.batch_size}; prompt tokens {min(map(len, prompts))}-{max(map(len, prompts))}"
        f"{'; NF4' if args.load_in_4bit else ''}"
    )
    cuda = args.device.startswith("cuda")
    limit = limit_tok_s(model, min(args.batch_size, args.prompts * args.samples)) if cuda else None
    print(
        f"| method | calls | tokens | seconds | tokens/s | vs {ref_name} |"
        + (" of limit |" if cuda else "")
        + "\n|---|---|---|---|---|---|"
        + ("---|" if cuda else "")
    )
    for m, calls, tokens, secs, tps in rows:
        share = f" {tps / limit:.1%} |" if limit else ""
        print(f"| {m} | {calls} | {tokens} | {secs:.2f} | {tps:.1f} | {tps / ref:.2f}x |{share}")
    if limit:
        print(
            f"limit at batch {min(args.batch_size, args.prompts * args.samples)}: {limit:,.0f} tok/s"
        )
    if cuda and {"stage", "graph"} <= set(chosen):
        print(greedy_agreement(model, prompts, args, pad))
        print(step_costs(model, prompts, args, pad))
        print(phases(model, prompts, args, pad))


if __name__ == "__main__":
    main()
