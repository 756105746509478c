"""Local judge throughput: questions per second of the log-prob judge, by batch size and device.

    python -m bench.judge_local [--config-dir DIR] [--devices cpu,cuda] [--threads N]

With --config-dir (a folder with config.json + tokenizer files) the model is built from the config
with random weights: the same architecture and cost as the real one, no weights needed (for the GPU
machine). Without it, params.model's base model is loaded. Prints one table row per setting.
"""

from __future__ import annotations

import argparse
import time

import torch


def _questions(n: int):
    from lib.judge.prompts import pair_question

    a = "I had a lovely weekend, went hiking with friends and cooked a big dinner. How about you?"
    b = "Not much, just stayed home and watched a couple of films. It rained all Saturday."
    inp = "Hey! How was your weekend? Did you do anything fun?"
    return [
        pair_question("social", inp, a if i % 2 else b, b if i % 2 else a, 2000) for i in range(n)
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config-dir", default=None)
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--questions", type=int, default=64)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lib.judge.local_backend import LocalJudge

    if args.config_dir:
        tok = AutoTokenizer.from_pretrained(args.config_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config_dir))
        name = f"random weights, config of {args.config_dir}"
    else:
        from lib.config import load_section
        from lib.models import ModelParams, load_model

        mp = load_section(ModelParams, "model")
        model, tok = load_model(mp)
        name = mp.base
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    qs = _questions(args.questions)
    print(
        f"model: {name}; prompt tokens: {len(tok(LocalJudge(model, tok, '').prompt_text(qs[0]))['input_ids'])}"
    )
    print("| device | dtype | batch | questions/s | s per 160 questions (default run) |")
    print("|---|---|---|---|---|")
    for dev in args.devices.split(","):
        for dtype in [torch.float32] + ([torch.bfloat16] if dev == "cuda" else []):
            m = model.to(device=dev, dtype=dtype).eval()
            for bs in (int(x) for x in args.batch_sizes.split(",")):
                judge = LocalJudge(m, tok, "bench", batch_size=bs)
                judge.ask(qs[: min(bs, len(qs))])  # warm-up
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                judge.ask(qs)
                if dev == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                qps = len(qs) / dt
                print(
                    f"| {dev} | {str(dtype).split('.')[-1]} | {bs} | {qps:.1f} | {160 / qps:.1f} |"
                )


if __name__ == "__main__":
    main()
