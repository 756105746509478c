"""Sampling throughput: naive loop vs `num_return_sequences` vs the generate stage's batched path.

    .venv/bin/python -m bench.generate [--model smollm2-135m-instruct|tiny-random|qwen3-8b-random]
        [--device cpu|cuda] [--prompts 8] [--samples 10] [--max-new-tokens 32] [--batch-size 80]

Same prompts, same sampling settings (temperature 0.7, top_p 0.9, no top-k), every row runs to
exactly `--max-new-tokens` (HF: `min_new_tokens` = max; ours: no stop token), and tokens/s counts
the tokens actually generated:
(a) naive: one `model.generate` call per sample (what lm-evaluation-harness `repeats` does);
(b) nrs: one `model.generate(num_return_sequences=samples)` call per prompt;
(c) stage: `lib.generate.plan` batches (length-sorted, `--batch-size` rows a call) through
    `lib.sampling.sample` (per-row seeds, shared prefill of a prompt's samples, KV cache).
(a) can be limited to the first `--naive-prompts` prompts (a rate is a rate). On a GPU the first
large call pays one-off allocator growth: use `--repeats 2` (best of 2).
`qwen3-8b-random`: Qwen3ForCausalLM from Qwen3-8B's config with random bf16 weights, random
prompt token ids (no tokenizer needed); for GPU scale only.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import pandas as pd
import torch

from lib.config import params_for
from lib.generate import Prompt, plan

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
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from lib.shapes import QWEN3_8B_SHAPES

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


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, list[list[int]], int]:
    """(model, prompt token ids, pad id)."""
    device = torch.device(args.device)
    if args.model == "qwen3-8b-random":
        model = qwen3_8b_random(device)
        g = torch.Generator().manual_seed(0)
        lengths = [24 + (37 * i) % 97 for i in range(args.prompts)]
        prompts = [torch.randint(0, 150000, (n,), generator=g).tolist() for n in lengths]
        return model, prompts, 151643
    from lib.chat import chat_prompt_ids
    from lib.models import load_model

    model, tok = load_model(params_for("model", base=args.model, device=args.device))
    texts = [
        QUESTIONS[i % len(QUESTIONS)] + (f" ({i})" if i >= len(QUESTIONS) else "")
        for i in range(args.prompts)
    ]
    return model, [chat_prompt_ids(tok, t) for t in texts], tok.pad_token_id


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


def run_stage(model, prompts, args, pad) -> tuple[int, int]:
    from lib.sampling import sample

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
    wrapped = [Prompt("", p, None) for p in prompts]
    tokens = calls = 0
    for batch in plan(test, wrapped, gp, seed=0):
        comps = sample(
            model,
            [prompts[j.row] for j in batch],
            [j.seed for j in batch],
            max_new_tokens=args.max_new_tokens,
            eos_token_ids=[
                -1
            ],  # no stop token: every row runs the full length, like min_new_tokens
            pad_token_id=pad,
            temperature=args.temperature,
            top_p=args.top_p,
        )
        tokens += sum(len(c.token_ids) for c in comps)
        calls += 1
    return tokens, calls


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
    ap.add_argument("--repeats", type=int, default=1, help="best of N timings per method")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    args = ap.parse_args(argv)
    args.naive_prompts = args.naive_prompts or args.prompts

    torch.manual_seed(0)
    model, prompts, pad = load(args)
    methods = {"naive": run_naive, "nrs": run_nrs, "stage": run_stage}
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    # Warm-up (allocator, kernels, lazy init) on one short prompt, outside the timings.
    warm = argparse.Namespace(
        **{**vars(args), "max_new_tokens": 2, "samples": 2, "naive_prompts": 1}
    )
    for m in chosen:
        methods[m](model, prompts[:1], warm, pad)

    rows = []
    for m in chosen:
        tokens, calls, secs = min(
            (timed(methods[m], model, prompts, args, pad) for _ in range(args.repeats)),
            key=lambda r: r[2],
        )
        rows.append((m, calls, tokens, secs, tokens / secs))
    ref = next((r[4] for r in rows if r[0] == "nrs"), rows[0][4])
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
    )
    print("| method | calls | tokens | seconds | tokens/s | vs nrs |\n|---|---|---|---|---|---|")
    for m, calls, tokens, secs, tps in rows:
        print(f"| {m} | {calls} | {tokens} | {secs:.2f} | {tps:.1f} | {tps / ref:.2f}x |")


if __name__ == "__main__":
    main()
