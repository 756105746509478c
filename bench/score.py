"""Self-BLEU: precomputed-count implementation vs the naive sacrebleu loop, side by side.

    .venv/bin/python -m bench.score [--prompts 100] [--samples 10] [--repeats 3]

Synthetic prompts of `--samples` sentences each (chat-reply-like lengths, shared vocabulary so
n-grams overlap). Both implementations score the same texts; values are asserted equal to 1e-9.
"""

from __future__ import annotations

import argparse
import platform
import random
import time

from lib.metrics import self_bleu, self_bleu_naive

WORDS = [
    "the",
    "a",
    "i",
    "you",
    "we",
    "it",
    "is",
    "was",
    "to",
    "of",
    "and",
    "in",
    "that",
    "for",
    "on",
    "with",
    "my",
    "your",
    "this",
    "be",
    "have",
    "do",
    "not",
    "what",
    "how",
    "really",
    "good",
    "great",
    "thanks",
    "yes",
    "no",
    "maybe",
    "today",
    "time",
    "day",
    "think",
    "know",
    "like",
    "just",
    "so",
    "cat",
    "dog",
    "city",
    "music",
    "movie",
    "book",
    "game",
    "work",
    "home",
    "friend",
    "family",
    "weather",
    ",",
    ".",
    "!",
    "?",
]


def make_prompts(n_prompts: int, n_samples: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) for _ in range(n_samples)]
        for _ in range(n_prompts)
    ]


def best_time(fn, prompts, repeats: int) -> tuple[float, list[float]]:
    best, vals = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        vals = [fn(p) for p in prompts]
        best = min(best, time.perf_counter() - t0)
    return best, vals


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    prompts = make_prompts(args.prompts, args.samples)
    self_bleu(prompts[0])  # warm imports for both
    self_bleu_naive(prompts[0])
    t_naive, v_naive = best_time(self_bleu_naive, prompts, args.repeats)
    t_fast, v_fast = best_time(self_bleu, prompts, args.repeats)
    worst = max(abs(a - b) for a, b in zip(v_naive, v_fast, strict=True))
    assert worst < 1e-9, f"values differ by {worst}"

    print(f"Self-BLEU, {args.prompts} prompts x {args.samples} samples, best of {args.repeats}")
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"{'implementation':<34}{'seconds':>10}{'ms/prompt':>12}{'ratio':>8}")
    print(
        f"{'naive sacrebleu sentence_bleu loop':<34}{t_naive:>10.3f}{1e3 * t_naive / args.prompts:>12.2f}{1.0:>8.1f}"
    )
    print(
        f"{'lib.metrics.self_bleu':<34}{t_fast:>10.3f}{1e3 * t_fast / args.prompts:>12.2f}{t_naive / t_fast:>8.1f}"
    )
    print(f"max |difference| = {worst:.1e}")


if __name__ == "__main__":
    main()
