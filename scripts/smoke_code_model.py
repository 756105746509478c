"""HumanEval smoke test of a base model through the pipeline's own code path, greedy, on the CPU.

    python scripts/smoke_code_model.py --model qwen2.5-coder-0.5b-instruct --problems 10

The first N HumanEval problems (sorted by task id, as `lib.domains.code` reads them) are prompted
as the `zero_shot` system is (`lib.generate.generate`: the `code` template inside the model's own
chat template, the body extracted from the fenced block), one greedy sample each with params.yaml's
`generate.max_new_tokens.code` (256), then run against their tests in the sandbox the score stage
uses (`lib.checkers.code_passes`, params.yaml's `score` limits). "parses": prompt + extracted body
is valid Python (`lib.train.rewards.extract_program`, as RESULTS.md counts it). Prints a markdown
table and the first problem's extracted body; `--jsonl` keeps every sample.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.checkers import code_passes  # noqa: E402
from lib.config import REPO_PARAMS, load_seed, params_for  # noqa: E402
from lib.domains.code import humaneval_pairs  # noqa: E402
from lib.generate import generate  # noqa: E402
from lib.models import load_model  # noqa: E402
from lib.sandbox import SandboxLimits  # noqa: E402
from lib.train.rewards import extract_program  # noqa: E402


def humaneval_frame(n: int) -> pd.DataFrame:
    """HumanEval/0 .. HumanEval/n-1 in the columns `generate` reads (test split rows).

    By task number: `humaneval_pairs` sorts the ids as strings (0, 1, 10, 100, ...)."""
    pairs = sorted(humaneval_pairs(), key=lambda p: int(p.meta["task_id"].split("/")[1]))
    rows = []
    for pair in pairs[:n]:
        rows.append(
            {
                "id": pair.id,
                "domain": "code",
                "input": pair.input,
                "reference": pair.reference,
                "references": [pair.reference],
                "meta": json.dumps(pair.meta),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="model.base value")
    ap.add_argument("--problems", type=int, default=10, help="first N HumanEval problems")
    ap.add_argument("--batch-size", type=int, default=10, help="rows per sampler call")
    ap.add_argument("--jsonl", type=Path, help="also write every sample (prompt, output, ...) here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    model, tok = load_model(params_for("model", base=args.model, device="cpu", dtype="float32"))
    t_load = time.perf_counter() - t0
    gen = params_for("generate")
    gen = dataclasses.replace(
        gen, num_samples=1, temperature=0.0, batch_size=args.batch_size, decode="eager"
    )
    test = humaneval_frame(args.problems)
    t0 = time.perf_counter()
    df = generate(
        model,
        tok,
        "zero_shot",
        test,
        None,
        gen,
        params_for("prompts"),
        load_seed(REPO_PARAMS),
        progress=False,
    )
    t_gen = time.perf_counter() - t0
    score = params_for("score")
    limits = SandboxLimits(timeout_s=score.code_timeout_s, memory_mb=score.code_memory_mb)
    items = [(r.meta, r.output, f"smoke: {r.id}") for r in df.itertuples()]
    passed = code_passes(items, limits, score.code_workers)
    parses = [extract_program(r.output, json.loads(r.meta)) is not None for r in df.itertuples()]

    print(
        f"model {args.model}: loaded in {t_load:.0f} s; {len(df)} greedy samples in {t_gen:.0f} s"
    )
    print(f"(max_new_tokens {gen.budget('code')}, {int(df['n_tokens'].sum())} tokens generated)\n")
    print("| problem | parses | passes | tokens | finish |")
    print("|---|:-:|:-:|--:|---|")
    for r, p, ok in zip(df.itertuples(), parses, passed, strict=True):
        mark = {True: "yes", False: "no"}
        print(f"| {r.id} | {mark[p]} | {mark[ok]} | {r.n_tokens} | {r.finish_reason} |")
    print(f"| **total** | {sum(parses)}/{len(df)} | {sum(passed)}/{len(df)} | | |\n")
    if args.jsonl:
        df.assign(parses=parses, passes=passed).to_json(args.jsonl, orient="records", lines=True)
    first = df.iloc[0]
    print(f"{first['id']}: the extracted body (program = prompt + body + tests):\n")
    print(f"```python\n{first['output']}```")


if __name__ == "__main__":
    main()
