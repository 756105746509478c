"""Stage judge: Claude (or, offline, a local model) compares polychromic with every other system.

Writes the per-comparison table (schema JUDGMENTS), metrics/judge.json (win / tie / loss rates with
bootstrap 95% CIs per opponent, backend labelled) and, with `judge.pass_checker`, judge-based Pass@k
for social / creative. The API key comes from env ANTHROPIC_API_KEY only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.cli import run
from lib.config import load_section, load_seed
from lib.io import read_parquet, write_json, write_parquet
from lib.judge import JudgeParams, make_backend, resolve_backend, run_judge
from lib.judge.run import check_complete
from lib.schemas import GENERATIONS, JUDGE_PASS, JUDGMENTS, SYSTEMS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generations-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--pass-out", type=Path, default=Path("data/judge/pass_at_k.parquet"))
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/judge"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)

    params = load_section(JudgeParams, "judge", args.params)
    model_params = None
    if resolve_backend(params) == "local":
        # torch and transformers only for the local judge: the API judge starts in ~1 s
        from lib.models import ModelParams

        model_params = load_section(ModelParams, "model", args.params)
    seed = load_seed(args.params)
    gens = {
        s: read_parquet(args.generations_dir / f"{s}.parquet", GENERATIONS)
        for s in SYSTEMS
        if s == "polychromic" or s in params.opponents or params.pass_checker
    }
    judge = make_backend(params, model_params, args.cache_dir)
    comparisons, metrics, pass_df = run_judge(gens, params, seed, judge)
    check_complete(metrics, params, args.cache_dir)  # before any output: DVC must not lock it

    write_parquet(comparisons, args.out, JUDGMENTS)
    if pass_df is not None:
        write_parquet(pass_df, args.pass_out, JUDGE_PASS)
    write_json(metrics, args.metrics)
    u = metrics["usage"]
    print(
        f"judge [{metrics['backend']}: {metrics['judge_model']}]: {metrics['n_comparisons']} "
        f"comparisons, {metrics['n_missing']} missing ({metrics['n_not_asked']} not asked)"
        + (f"; stopped early: {u['stopped']}" if u.get("stopped") else "")
    )


if __name__ == "__main__":
    run(main)
