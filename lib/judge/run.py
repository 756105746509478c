"""The judge stage's one entry point: pick the backend, ask, and tabulate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from lib.judge.anthropic_backend import KEY_ENV, AnthropicJudge, JudgeIncomplete
from lib.judge.compare import (
    SYSTEM,
    build_pairs,
    judgments_frame,
    pair_questions,
    win_rate_metrics,
)
from lib.judge.params import JudgeParams
from lib.judge.pass_checker import pass_questions, pass_table
from lib.judge.prompts import MISSING


def resolve_backend(params: JudgeParams, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if params.backend != "auto":
        return params.backend
    return "anthropic" if env.get(KEY_ENV) else "local"


def make_backend(params: JudgeParams, model_params: Any, cache_dir: str | Path | None) -> Any:
    backend = resolve_backend(params)
    if backend == "anthropic":
        return AnthropicJudge(params, cache_dir)
    from lib.judge.local_backend import LocalJudge
    from lib.models import load_model

    model, tokenizer = load_model(model_params)
    return LocalJudge(model, tokenizer, model_params.base, params.local_batch_size)


def run_judge(
    gens: dict[str, pd.DataFrame], params: JudgeParams, seed: int, judge: Any
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
    """(comparisons, metrics, judge Pass@k table or None)."""
    if SYSTEM not in gens:
        raise ValueError(f"judge: generations of '{SYSTEM}' are required")
    missing = [o for o in params.opponents if o not in gens]
    if missing:
        raise ValueError(f"judge: generations missing for opponent(s) {missing}")
    pairs = build_pairs(gens, params.opponents, params.samples_per_input, seed)
    answers = judge.ask(pair_questions(pairs, params.max_response_chars), desc="pairwise")
    info = judge.describe()
    comparisons = judgments_frame(pairs, answers, info["backend"], info["judge_model"])

    pass_df, pass_not_asked = None, 0
    if params.pass_checker:
        all_gens = pd.concat([gens[s] for s in sorted(gens)], ignore_index=True)
        rows, questions = pass_questions(
            all_gens, params.rubric, params.max_response_chars, params.pass_domains
        )
        verdicts = [a.verdict for a in judge.ask(questions, desc="pass@k")]
        pass_not_asked = sum(v == MISSING for v in verdicts)
        pass_df = pass_table(rows, verdicts, info["backend"])
        info = judge.describe()  # usage now includes the pass checker's calls

    metrics: dict[str, Any] = {
        "backend": info["backend"],
        "judge_model": info["judge_model"],
        "label": (
            "Claude (anthropic API) pairwise judge"
            if info["backend"] == "anthropic"
            else "LOCAL log-prob judge (offline fallback, weak; not a Claude judgment)"
        ),
        "system": SYSTEM,
        "samples_per_input": params.samples_per_input,
        "bootstrap": params.bootstrap,
        "rule": "both orders asked; disagreement between orders = tie; no verdict = missing",
        "opponents": win_rate_metrics(comparisons, params.bootstrap, seed),
        "n_comparisons": int(len(comparisons)),
        "n_missing": int((comparisons["outcome"] == "missing").sum()),
        "n_not_asked": _not_asked(comparisons) + pass_not_asked,
        "allow_missing": params.allow_missing,
        "usage": info,
    }
    if pass_df is not None:
        metrics["pass_checker"] = {
            "domains": list(params.pass_domains),
            "n_rows": int(len(pass_df)),
            "mean_pass_at_1": {
                s: _nanmean(g["pass_at_1"]) for s, g in pass_df.groupby("system", sort=True)
            },
            "mean_pass_at_10": {
                s: _nanmean(g["pass_at_10"]) for s, g in pass_df.groupby("system", sort=True)
            },
        }
    return comparisons, metrics, pass_df


def _not_asked(comparisons: pd.DataFrame) -> int:
    """Comparisons left open because the run stopped before asking (not unparseable answers)."""
    open_ = comparisons["verdict_first"].eq(MISSING) | comparisons["verdict_second"].eq(MISSING)
    return int(open_.sum())


def check_complete(metrics: dict[str, Any], params: JudgeParams, cache_dir: Any) -> None:
    """Refuse to hand DVC an incomplete result as done (issue 17): the stage fails, `dvc repro`
    asks again, and the answers paid so far come from the cache. `judge.allow_missing` accepts it."""
    stopped = metrics["usage"].get("stopped")
    n = metrics["n_not_asked"]
    if stopped and n and not params.allow_missing:
        raise JudgeIncomplete(
            f"judge: {n} judgments left open (stopped: {stopped}); "
            f"the {metrics['usage'].get('answers', 0)} answers received are cached in {cache_dir}. "
            "Rerun `dvc repro` to ask the rest (cached answers are free), raise judge.max_calls / "
            "judge.max_cost_usd, or set judge.allow_missing: true to accept the missing ones"
        )


def _nanmean(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.mean()) if len(s) else float("nan")
