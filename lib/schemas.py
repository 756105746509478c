"""Parquet schemas of every artefact passed between stages, declared once.

A stage validates what it reads (`lib.io.read_parquet`) and what it writes (`lib.io.write_parquet`)
against these, so schema drift fails with the column and the file named.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class Schema:
    name: str
    arrow: pa.Schema
    producer: str  # the stage that writes it, named in errors

    @property
    def columns(self) -> list[str]:
        return self.arrow.names

    def check(self, got: pa.Schema, where: str) -> None:
        from lib.io import SchemaError

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
        from lib.io import SchemaError

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

# Metric columns of the per-prompt score table, in the order reports show them. NaN = missing
# (could not be computed or not applicable, e.g. Pass@k on `creative` without a judge), never 0.0.
PASS_AT_K = tuple(f"pass_at_{k}" for k in range(1, 11))
SCORE_METRICS = (
    "self_bleu",  # ↓, leave-one-out sacrebleu sentence BLEU / 100
    "distinct_1",  # ↑, distinct / total n-grams
    "distinct_2",
    "distinct_1_li",  # ↑, Li et al. (2016): distinct n-grams / tokens
    "distinct_2_li",
    "semantic_diversity",  # ↑, mean pairwise 1 − cos, evaluation encoder (score.eval_encoder)
    "semantic_diversity_train",  # ↑, same with the encoder training scored against (MiniLM)
    "rouge_l",  # mean over samples of ROUGE-L F vs the reference (max over references)
    "bertscore_f1",  # mean over samples, evaluation encoder at layer score.bertscore_layer
    "mean_length",  # mean whitespace tokens per sample
    *PASS_AT_K,
)

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
