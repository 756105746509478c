"""Stage `score`: per-prompt diversity, quality, Pass@k and pass^k over a system's samples.

One row per test id (schema SCORES). Embeddings are computed once per distinct text, batched;
BERTScore runs once over all (sample, references) pairs; code samples run in parallel sandboxes.

Instruments (DESIGN.md §4): semantic diversity (and effective diversity, the same among the samples
that pass the checker Pass@k counts), BERTScore and the social checker use the
evaluation encoder `score.eval_encoder`, not the one training scored samples with
(`lib.embed.TRAIN_ENCODER`, MiniLM); `semantic_diversity_train` keeps the training encoder's view
beside it, so a gain that only the training encoder sees shows up as a gap between the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from lib import checkers, metrics
from lib.config import param
from lib.sandbox import SandboxLimits
from lib.schemas import PASS_AT_K, PASS_HAT_K, SCORE_METRICS

NAN = float("nan")


@dataclass(frozen=True)
class ScoreParams:
    """`score:` in params.yaml."""

    code_timeout_s: float = param(gt=0)
    code_memory_mb: int = param(ge=16)
    code_workers: int = param(ge=1)
    qa_f1_threshold: float = param(gt=0, le=1)
    social_human_pass_rate: float = param(gt=0, lt=1)
    embed_batch_size: int = param(ge=1)
    eval_encoder: str = param()  # lib.embed name (mpnet, minilm) or a local folder
    bertscore_layer: int = param(ge=1)  # layer of eval_encoder BERTScore reads
    device: str = param(pattern=r"auto|cpu|cuda(:\d+)?")  # the encoders' device; auto: a GPU if any


EmbedFn = Callable[[list[str]], np.ndarray]


def _phase(system: str, what: str) -> None:
    # The encoders, the sandbox and BERTScore are minutes on a CPU at HumanEval's 1,640 samples a
    # system; each announces itself before its own progress bar.
    tqdm.write(f"score {system}: {what}")


def _unique_embed(texts: list[str], embed_fn: EmbedFn) -> dict[str, np.ndarray]:
    uniq = list(dict.fromkeys(texts))
    if not uniq:
        return {}
    emb = embed_fn(uniq)
    return dict(zip(uniq, np.asarray(emb, dtype=np.float64), strict=True))


def _text(x: Any) -> str | None:
    # pandas reads a null string as None or NaN depending on the dtype backend
    return x if isinstance(x, str) else None


def _references(row: Any) -> list[str]:
    """All human references of a row (`references`, else `reference`); [] when there are none."""
    many = row.references if isinstance(row.references, list | tuple | np.ndarray) else []
    refs = [r for r in many if isinstance(r, str)]
    if not refs and _text(row.reference) is not None:
        refs = [row.reference]
    return refs


def score_generations(
    gens: pd.DataFrame,
    val: pd.DataFrame,
    params: ScoreParams,
    system: str,
    *,
    where: str = "generations",
    val_where: str = "val",
    embed_fn: EmbedFn | None = None,
    train_embed_fn: EmbedFn | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every test id of `gens`; returns (SCORES rows, metrics JSON object).

    `embed_fn` (default: `score.eval_encoder`) measures; `train_embed_fn` (default: the training
    encoder) only feeds `semantic_diversity_train`.
    """
    from lib.embed import TRAIN_ENCODER, embed, encoder_path, model_name, same_encoder
    from lib.models import resolve_device

    encoder_path(params.eval_encoder)  # an unknown name fails before any work
    device = str(resolve_device(params.device, "score.device"))
    if embed_fn is None:

        def embed_fn(texts: list[str]) -> np.ndarray:
            _phase(system, f"{len(texts)} texts through {model_name(params.eval_encoder)}")
            return embed(texts, params.eval_encoder, device, params.embed_batch_size, True)

    if train_embed_fn is None:

        def train_embed_fn(texts: list[str]) -> np.ndarray:
            _phase(system, f"{len(texts)} texts through {model_name(TRAIN_ENCODER)}")
            return embed(texts, TRAIN_ENCODER, device, params.embed_batch_size, True)

    if gens.empty:
        raise ValueError(f"{where}: no generations to score")
    bad = gens.index[gens["system"] != system]
    if len(bad):
        raise ValueError(
            f"{where}: row {int(bad[0])} has system {gens.loc[bad[0], 'system']!r}, expected {system!r}"
        )
    gens = gens.reset_index(drop=True)
    gens = gens.assign(row_=np.arange(len(gens))).sort_values(["id", "sample"], kind="stable")
    dup = gens.duplicated(["id", "sample"])
    if dup.any():
        r = gens[dup].iloc[0]
        raise ValueError(
            f"{where}: row {int(r['row_'])}: duplicate sample {r['sample']} of id {r['id']}"
        )
    groups = [g for _, g in gens.groupby("id", sort=True)]
    for g in groups:
        if g["domain"].nunique() != 1:
            raise ValueError(
                f"{where}: id {g['id'].iloc[0]} mixes domains {sorted(g['domain'].unique())}"
            )
    domains = sorted(gens["domain"].unique())
    unknown = [d for d in domains if d not in checkers.CHECKER_NAMES]
    if unknown:
        raise ValueError(
            f"{where}: unknown domain(s) {unknown}; known: {sorted(checkers.CHECKER_NAMES)}"
        )

    outputs = gens["output"].tolist()
    emb = _unique_embed(outputs, embed_fn)
    train_emb = _unique_embed(outputs, train_embed_fn)

    # Pass/fail per generation row (by row_), None where no checker applies.
    passed: dict[int, bool] = {}
    tau, n_tau = None, None
    if "social" in domains:
        tau, n_tau = checkers.social_tau(
            val["references"].tolist(), params.social_human_pass_rate, embed_fn, val_where
        )
        soc = gens[gens["domain"] == "social"]
        for r in soc.itertuples():
            if r.reference is None:
                raise ValueError(
                    f"{where}: row {r.row_} (id {r.id}): social sample has no reference"
                )
        ref_emb = _unique_embed(soc["reference"].tolist(), embed_fn)
        for r in soc.itertuples():
            a, b = emb[r.output], ref_emb[r.reference]
            cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            passed[r.row_] = cos >= tau
    if "qa" in domains:
        for r in gens[gens["domain"] == "qa"].itertuples():
            try:
                passed[r.row_] = checkers.qa_pass(r.output, _references(r), params.qa_f1_threshold)
            except ValueError as e:
                raise ValueError(f"{where}: row {r.row_} (id {r.id}): {e}") from e
    if "code" in domains:
        code = gens[gens["domain"] == "code"]
        items = [
            (r.meta, r.output, f"{where}: row {r.row_} (id {r.id})") for r in code.itertuples()
        ]
        limits = SandboxLimits(timeout_s=params.code_timeout_s, memory_mb=params.code_memory_mb)
        for r, ok in zip(
            code.itertuples(),
            checkers.code_passes(items, limits, params.code_workers, f"score {system}: tests"),
            strict=True,
        ):
            passed[r.row_] = ok

    # BERTScore once over every sample that has references.
    bs_rows = [r for r in gens.itertuples() if _references(r)]
    bert: dict[int, float] = {}
    bs_hash = None
    if bs_rows:
        _phase(system, f"BERTScore of {len(bs_rows)} samples")
        f1, bs_hash = metrics.bertscore_f1(
            [r.output for r in bs_rows],
            [_references(r) for r in bs_rows],
            num_layers=params.bertscore_layer,
            encoder=params.eval_encoder,
            batch_size=params.embed_batch_size,
            device=device,
            progress=True,
        )
        bert = {r.row_: float(v) for r, v in zip(bs_rows, f1, strict=True)}

    rows = []
    for g in tqdm(groups, desc=f"score {system}", unit="prompt", leave=False):
        texts = g["output"].tolist()
        first = next(g.itertuples())
        refs = _references(first)
        n = len(texts)
        row: dict[str, Any] = {"system": system, "id": first.id, "n_samples": n}
        row["self_bleu"] = metrics.self_bleu(texts) if n >= 2 else NAN
        row["distinct_1"] = metrics.distinct_n(texts, 1)
        row["distinct_2"] = metrics.distinct_n(texts, 2)
        row["distinct_1_li"] = metrics.distinct_n_li(texts, 1)
        row["distinct_2_li"] = metrics.distinct_n_li(texts, 2)
        row["semantic_diversity"] = (
            metrics.semantic_diversity(np.stack([emb[t] for t in texts])) if n >= 2 else NAN
        )
        row["semantic_diversity_train"] = (
            metrics.semantic_diversity(np.stack([train_emb[t] for t in texts])) if n >= 2 else NAN
        )
        row["rouge_l"] = float(np.mean([metrics.rouge_l(t, refs) for t in texts])) if refs else NAN
        row["bertscore_f1"] = float(np.mean([bert[r] for r in g["row_"]])) if refs else NAN
        row["mean_length"] = float(np.mean([len(t.split()) for t in texts]))
        flags = [passed.get(r) for r in g["row_"]]
        if all(f is None for f in flags):
            row["n_pass"] = None
            row.update({c: NAN for c in (*PASS_AT_K, *PASS_HAT_K, "effective_diversity")})
        else:
            c = int(sum(bool(f) for f in flags))
            row["n_pass"] = c
            for k, (at, hat) in enumerate(zip(PASS_AT_K, PASS_HAT_K, strict=True), start=1):
                row[at] = metrics.pass_at_k(n, c, k) if k <= n else NAN
                row[hat] = metrics.pass_hat_k(n, c, k) if k <= n else NAN
            row["effective_diversity"] = (
                metrics.effective_diversity(
                    np.stack([emb[t] for t in texts]), np.array([bool(f) for f in flags])
                )
                if c >= 2
                else NAN  # no pair of passing samples: missing, not "no diversity"
            )
        rows.append(row)

    eval_model = model_name(params.eval_encoder)
    scores = pd.DataFrame(rows)
    scores["n_pass"] = scores["n_pass"].astype("Int64")
    summary = summarise(scores, system)
    summary.update(
        {
            "social_tau": tau,
            "social_tau_n_pairs": n_tau,
            "social_human_pass_rate": params.social_human_pass_rate if tau is not None else None,
            "checker": {d: checkers.checker_name(d, eval_model) for d in domains},
            "qa_f1_threshold": params.qa_f1_threshold if "qa" in domains else None,
            "code_timeout_s": params.code_timeout_s if "code" in domains else None,
            "bertscore": {
                "model": eval_model if bs_hash else None,
                "layer": params.bertscore_layer if bs_hash else None,
                "hash": bs_hash,
            },
            # Both instruments, named: the paper table's footnote reads them from here.
            "encoders": {
                "train": {"name": TRAIN_ENCODER, "model": model_name(TRAIN_ENCODER)},
                "eval": {"name": params.eval_encoder, "model": eval_model},
                "same": same_encoder(TRAIN_ENCODER, params.eval_encoder),
            },
            "domains": domains,
        }
    )
    return scores, summary


def summarise(scores: pd.DataFrame, system: str) -> dict[str, Any]:
    """Means over prompts of each metric (null where no prompt has it) and how many prompts count."""
    out: dict[str, Any] = {"system": system, "n_prompts": int(len(scores))}
    means, counts = {}, {}
    for m in SCORE_METRICS:
        col = pd.to_numeric(scores[m], errors="coerce").astype(float)
        ok = col[np.isfinite(col)]
        means[m] = float(ok.mean()) if len(ok) else None
        counts[m] = int(len(ok))
    out["mean"] = means
    out["n_prompts_with"] = counts
    n_pass = scores["n_pass"].dropna()
    out["mean_n_pass"] = float(n_pass.mean()) if len(n_pass) else None
    if any(v is not None and not math.isfinite(v) for v in means.values()):
        raise ValueError("summarise: non-finite mean")  # cannot happen: NaNs were dropped
    return out
