"""Hand-built SCORES / JUDGMENTS tables for the stats and plot tests (not collected by pytest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib.io import write_parquet
from lib.schemas import JUDGMENTS, PASS_AT_K, PASS_HAT_K, SCORE_METRICS, SCORES, SYSTEMS

# Per-system offsets: polychromic is the most diverse (low Self-BLEU, high semantic diversity),
# baseline has the best ROUGE-L, polychromic the best Pass@k.
LEVEL = {"zero_shot": 0.0, "few_shot": 0.1, "baseline": 0.2, "gem": 0.3, "polychromic": 0.5}


def score_table(system: str, n_ids: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng([seed, SYSTEMS.index(system)])
    lv = LEVEL[system]
    noise = lambda: rng.uniform(0, 0.02, n_ids)  # noqa: E731
    df = pd.DataFrame(
        {
            "system": system,
            "id": [f"q{i:02d}" for i in range(n_ids)],
            "n_samples": 10,
            "n_pass": np.arange(n_ids) % 11,
        }
    )
    for m in SCORE_METRICS:
        df[m] = 0.3 + noise()
    df["self_bleu"] = 0.8 - lv + noise()
    df["distinct_2"] = 0.3 + lv + noise()
    df["semantic_diversity"] = 0.1 + lv + noise()
    df["semantic_diversity_train"] = np.nan  # all missing: a metric no prompt has
    df["rouge_l"] = 0.4 - abs(lv - 0.2) + noise()
    df["bertscore_f1"] = 0.8 + noise()
    for k, col in enumerate(PASS_AT_K, start=1):
        df[col] = np.clip(0.1 + lv * np.log1p(k) / 3 + noise(), 0, 1)
    # pass^k falls with k from pass^1 = Pass@1; effective diversity is at most the semantic one
    for k, col in enumerate(PASS_HAT_K, start=1):
        df[col] = df["pass_at_1"] ** (1 + (k - 1) / 3)
    df["effective_diversity"] = 0.8 * df["semantic_diversity"]
    return df[SCORES.columns]


def write_scores(dirpath: Path, n_ids: int = 8) -> dict[str, pd.DataFrame]:
    tables = {s: score_table(s, n_ids) for s in SYSTEMS}
    for s, df in tables.items():
        write_parquet(df, dirpath / f"{s}.parquet", SCORES)
    return tables


def judgments(backend: str = "local") -> pd.DataFrame:
    rows = []
    outcomes = {
        "zero_shot": "wwwwwwwt",
        "few_shot": "wwwtlwwl",
        "baseline": "wtltlwtm",
        "gem": "wltl",
    }
    code = {"w": "win", "t": "tie", "l": "loss", "m": "missing"}
    for opp, seq in outcomes.items():
        for i, ch in enumerate(seq):
            rows.append(
                {
                    "id": f"q{i % 4:02d}",
                    "system": "polychromic",
                    "opponent": opp,
                    "sample_system": i,
                    "sample_opponent": i,
                    "verdict_first": "A",
                    "verdict_second": "B",
                    "reason_first": None,
                    "reason_second": None,
                    "outcome": code[ch],
                    "backend": backend,
                    "judge_model": "smollm2-135m-instruct",
                }
            )
    return pd.DataFrame(rows)[JUDGMENTS.columns]


def write_judgments(path: Path, backend: str = "local") -> pd.DataFrame:
    df = judgments(backend)
    write_parquet(df, path, JUDGMENTS)
    return df


PARAMS_YAML = """\
seed: 7
stats:
  bootstrap: 300
  alpha: 0.05
  power: 0.8
  ci_format: halfwidth
  decimals: 3
plot:
  formats: [pdf, png]
  dpi: 80
  diversity_metric: semantic_diversity
  quality_metrics: [rouge_l, bertscore_f1, pass_at_10]
  tradeoff_quality: rouge_l
  bar_metrics: [self_bleu, distinct_2, semantic_diversity, rouge_l, bertscore_f1, pass_at_10]
"""
