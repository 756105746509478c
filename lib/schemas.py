"""Parquet schemas of every artefact passed between stages, declared once.

A stage validates what it reads (`lib.io.read_parquet`) and what it writes (`lib.io.write_parquet`)
against these, so schema drift fails with the column and the file named.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa


class SchemaError(ValueError):
    """A Parquet artefact does not match the schema a stage expects."""


@dataclass(frozen=True)
class Schema:
    name: str
    arrow: pa.Schema
    producer: str  # the stage that writes it, named in errors

    @property
    def columns(self) -> list[str]:
        return self.arrow.names

    def check(self, got: pa.Schema, where: str) -> None:
        names = set(got.names)
        missing = [f.name for f in self.arrow if f.name not in names]
        extra = [n for n in got.names if n not in set(self.columns)]
        problems = []
        if missing:
            problems.append(f"missing column(s) {missing}")
        if extra:
            problems.append(f"unexpected column(s) {extra}")
        for f in self.arrow:
            if f.name in names:
                have = got.field(f.name).type
                if not _compatible(have, f.type):
                    problems.append(f"column '{f.name}' has type {have}, expected {f.type}")
        if problems:
            raise SchemaError(
                f"{where}: does not match schema '{self.name}' (written by stage "
                f"'{self.producer}'): " + "; ".join(problems)
            )

    def to_table(self, df: pd.DataFrame, where: str) -> pa.Table:
        self.check(pa.Schema.from_pandas(df, preserve_index=False), where)
        for f in self.arrow:
            if not f.nullable and df[f.name].isna().any():
                row = int(df[f.name].isna().to_numpy().nonzero()[0][0])
                raise SchemaError(f"{where}: column '{f.name}' is null at row {row}")
        try:
            return pa.Table.from_pandas(df[self.columns], schema=self.arrow, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SchemaError(f"{where}: cannot convert to schema '{self.name}': {e}") from e


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    if have == want:
        return True
    # pandas writes all-null columns as null and strings as large_string at times.
    if pa.types.is_null(have):
        return True
    if pa.types.is_string(want) and (pa.types.is_large_string(have) or pa.types.is_string(have)):
        return True
    if pa.types.is_integer(want) and pa.types.is_integer(have):
        return True
    if pa.types.is_floating(want) and (pa.types.is_floating(have) or pa.types.is_integer(have)):
        return True
    if pa.types.is_list(want) and (pa.types.is_list(have) or pa.types.is_large_list(have)):
        return _compatible(have.value_type, want.value_type)
    return False


def _schema(name: str, producer: str, *fields: pa.Field) -> Schema:
    return Schema(name, pa.schema(list(fields)), producer)


def _f(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


# One prompt → reference pair after filtering and deduplication (stage prepare).
# `group`: pairs sharing a group (same or near-duplicate input) never cross splits.
# `meta`: JSON object with domain extras (code: prompt, test, entry_point).
PAIRS = _schema(
    "pairs",
    "prepare",
    _f("id", pa.string()),
    _f("domain", pa.string()),
    _f("input", pa.string()),
    _f("reference", pa.string(), nullable=True),  # creative prompts have none
    _f("group", pa.string()),
    _f("meta", pa.string()),
)

# One split row (stage split). Train keeps every pair; val and test keep one row per distinct
# input with all its human references in `references` (chitchat has ~230 per opening prompt).
EXAMPLES = _schema(
    "examples",
    "split",
    *PAIRS.arrow,
    _f("split", pa.string()),
    _f("references", pa.list_(pa.string())),
)

# The systems that train an adapter (stages train_<system>, lib.train), then every compared system.
TRAINED_SYSTEMS = ("baseline", "gem", "polychromic")
SYSTEMS = ("zero_shot", "few_shot", *TRAINED_SYSTEMS)
# How tables and figures name them.
SYSTEM_LABELS = {
    "zero_shot": "Zero-shot",
    "few_shot": "Few-shot",
    "baseline": "Baseline LoRA",
    "gem": "GEM",
    "polychromic": "Polychromic",
}

# One sampled completion (stage generate@<system>): `generate.num_samples` rows per test input.
# `seed` reproduces this one sample alone; `prompt` is the exact text the model was given.
GENERATIONS = _schema(
    "generations",
    "generate",
    _f("system", pa.string()),
    _f("id", pa.string()),
    _f("sample", pa.int64()),
    _f("domain", pa.string()),
    _f("input", pa.string()),
    _f("reference", pa.string(), nullable=True),
    _f("references", pa.list_(pa.string())),
    _f("meta", pa.string()),
    _f("prompt", pa.string()),
    _f("output", pa.string()),
    _f("n_tokens", pa.int64()),
    _f("finish_reason", pa.string()),  # eos | length
    _f("seed", pa.int64()),
)


# Every per-prompt metric, declared once: its column in the score table, how tables and figures
# name it (`label`, `latex`), which way is better (None: no direction) and what it is. The score
# table's columns, the paper table's rows and the figures' labels all read this. NaN = missing
# (could not be computed or not applicable, e.g. Pass@k on `creative` without a judge), never 0.0.
@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # Unicode, without the direction arrow
    higher_is_better: bool | None
    definition: str
    latex: str | None = None  # LaTeX label where the escaped `label` would not do

    @property
    def display(self) -> str:
        """The label with its direction: `Self-BLEU ↓`."""
        arrow = {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]
        return self.label + arrow


K_MAX = 10  # Pass@k and pass^k for k = 1..K_MAX (generate.num_samples samples per prompt)
PASS_AT_K = tuple(f"pass_at_{k}" for k in range(1, K_MAX + 1))
PASS_HAT_K = tuple(f"pass_hat_{k}" for k in range(1, K_MAX + 1))
METRICS: tuple[Metric, ...] = (
    Metric("self_bleu", "Self-BLEU", False, "leave-one-out sacrebleu sentence BLEU / 100"),
    Metric("distinct_1", "Distinct-1", True, "distinct / total unigrams"),
    Metric("distinct_2", "Distinct-2", True, "distinct / total bigrams"),
    Metric("distinct_1_li", "Distinct-1 (per token)", True, "Li et al. (2016): distinct / tokens"),
    Metric("distinct_2_li", "Distinct-2 (per token)", True, "Li et al. (2016): distinct / tokens"),
    Metric(
        "semantic_diversity",
        "Semantic diversity",
        True,
        "mean pairwise 1 − cos, evaluation encoder (score.eval_encoder)",
    ),
    Metric(
        "semantic_diversity_train",
        "Semantic diversity (training encoder)",
        True,
        "the same with the encoder training scored against (MiniLM)",
    ),
    Metric(
        "effective_diversity",
        "Effective diversity",
        True,
        "semantic diversity among the samples that pass the checker; NaN with fewer than 2",
    ),
    Metric("rouge_l", "ROUGE-L", True, "mean over samples of ROUGE-L F (max over references)"),
    Metric(
        "bertscore_f1",
        "BERTScore F1",
        True,
        "mean over samples, evaluation encoder at layer score.bertscore_layer",
    ),
    Metric("mean_length", "Mean length (tokens)", None, "mean whitespace tokens per sample"),
    *(
        Metric(f"pass_at_{k}", f"Pass@{k}", True, f"1 − C(n−c, {k})/C(n, {k}): any of {k} passes")
        for k in range(1, K_MAX + 1)
    ),
    *(
        Metric(
            f"pass_hat_{k}",
            f"Pass^{k}",
            True,
            f"C(c, {k})/C(n, {k}): all of {k} pass (τ-bench)",
            latex=f"Pass$^{{{k}}}$",
        )
        for k in range(1, K_MAX + 1)
    ),
)
METRIC = {m.name: m for m in METRICS}
# Metric columns of the per-prompt score table, in the order reports show them.
SCORE_METRICS = tuple(m.name for m in METRICS)

# One row per (system, test input), aggregated over its samples (stage score@<system>).
SCORES = _schema(
    "scores",
    "score",
    _f("system", pa.string()),
    _f("id", pa.string()),
    _f("n_samples", pa.int64()),
    _f("n_pass", pa.int64(), nullable=True),  # null where no checker applies
    *(_f(m, pa.float64(), nullable=True) for m in SCORE_METRICS),
)

# One pairwise comparison of polychromic against an opponent on one test input (stage judge).
# Asked in both orders; `outcome` is from polychromic's side, a flip between orders is a tie.
JUDGMENTS = _schema(
    "judgments",
    "judge",
    _f("id", pa.string()),
    _f("system", pa.string()),  # always polychromic
    _f("opponent", pa.string()),
    _f("sample_system", pa.int64()),
    _f("sample_opponent", pa.int64()),
    _f(
        "verdict_first", pa.string()
    ),  # polychromic shown first: A | B | tie | unparseable | missing
    _f("verdict_second", pa.string()),  # polychromic shown second
    _f("reason_first", pa.string(), nullable=True),
    _f("reason_second", pa.string(), nullable=True),
    _f("outcome", pa.string()),  # win | tie | loss | missing
    _f("backend", pa.string()),  # anthropic | local (labelled in every output)
    _f("judge_model", pa.string()),
)

# Judge-based Pass@k for domains without an executable checker (stage judge, optional): one row per
# (system, test input). n_samples = samples the judge gave a verdict on; pass_at_k NaN for k > n.
JUDGE_PASS = _schema(
    "judge_pass",
    "judge",
    _f("system", pa.string()),
    _f("id", pa.string()),
    _f("n_samples", pa.int64()),
    _f("n_pass", pa.int64()),
    *(_f(k, pa.float64(), nullable=True) for k in PASS_AT_K),
    _f("backend", pa.string()),
)
