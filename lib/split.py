"""Prepared pairs → grouped train/val/test splits (stage split), each a pure function of its
inputs, the params and the seed. A near-duplicate group never straddles two splits; an adapter that
fixes a row's split (code: MBPP train/val, HumanEval test) keeps it there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.config import ParamsError, param
from lib.data import SPLITS, DataError, fixed_splits


@dataclass(frozen=True)
class SplitParams:
    """`split:` in params.yaml."""

    train: float = param(ge=0, le=1)
    val: float = param(ge=0, le=1)
    test: float = param(ge=0, le=1)
    max_train: int = param(ge=1)
    max_val: int = param(ge=1)
    max_test: int = param(ge=1)
    min_test: int = param(ge=1)  # fewer distinct test inputs is an error unless allow_small
    allow_small: bool = param()  # true: a split below min_test (or an empty one) only warns

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ParamsError(
                f"train + val + test = {self.train} + {self.val} + {self.test} = {total:g}: "
                "must sum to 1"
            )
        if self.min_test > self.max_test:
            raise ParamsError(
                f"min_test = {self.min_test} > split.max_test = {self.max_test}: need min <= max"
            )


def assign_groups(groups: pd.Series, p: SplitParams, seed: int) -> dict[str, str]:
    """Map each group to a split so row fractions approach the targets; deterministic from seed."""
    fracs = {"train": p.train, "val": p.val, "test": p.test}
    if any(f < 0 for f in fracs.values()) or abs(sum(fracs.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fracs}")
    sizes = groups.value_counts().sort_index()
    order = np.random.default_rng(seed).permutation(len(sizes))
    total = int(sizes.sum())
    have = dict.fromkeys(SPLITS, 0)
    out: dict[str, str] = {}
    for i in order:
        g, n = sizes.index[i], int(sizes.iloc[i])
        # The split furthest below its target (relative to its target) takes the next group.
        name = max(
            (s for s in SPLITS if fracs[s] > 0),
            key=lambda s: (fracs[s] * total - have[s]) / (fracs[s] * total),
        )
        out[g] = name
        have[name] += n
    return out


def split_pairs(pairs: pd.DataFrame, p: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    """Grouped train/val/test. val/test: one row per group with all its references.

    Caps: train keeps a seeded random sample of pairs; val/test keep inputs with two or more
    references first, then a seeded random sample of the rest.

    Rows whose adapter fixed the split (`meta["split"]`, code: MBPP train/val, HumanEval test)
    stay in it, one row per id (the fractions do not apply); caps still do.
    """
    fixed = fixed_splits(pairs)
    if fixed:
        where = pd.Series(fixed, index=pairs.index)
        key = "id"  # a benchmark problem is its own row, even beside a near-duplicate input
    else:
        where = pairs["group"].map(assign_groups(pairs["group"], p, seed))
        key = "group"
    rng = np.random.default_rng(seed + 1)
    out: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        part = pairs[where == name].sort_values("id", kind="stable")
        if name == "train":
            part = part.assign(references=[[r] if r is not None else [] for r in part["reference"]])
            cap = p.max_train
        else:
            rows = []
            for _, g in part.groupby(key, sort=True):
                refs = list(dict.fromkeys(r for r in g["reference"] if r is not None))
                first = g.iloc[0].to_dict()
                first["reference"] = refs[0] if refs else None
                first["references"] = refs
                rows.append(first)
            part = pd.DataFrame(rows, columns=[*pairs.columns, "references"])
            cap = p.max_val if name == "val" else p.max_test
        if len(part) > cap and name == "train":
            idx = np.sort(rng.choice(len(part), size=cap, replace=False))
            part = part.iloc[idx]
        elif len(part) > cap:
            # Inputs with several human references come first (chitchat's opening prompts): they
            # calibrate the social checker on val and give a human diversity reference on test.
            multi = np.flatnonzero(part["references"].map(len).to_numpy() >= 2)
            single = np.flatnonzero(part["references"].map(len).to_numpy() < 2)
            order = np.concatenate([rng.permutation(multi), rng.permutation(single)])
            part = part.iloc[np.sort(order[:cap])]
        out[name] = part.assign(split=name).reset_index(drop=True)
    return out


def check_sizes(parts: dict[str, pd.DataFrame], p: SplitParams) -> list[str]:
    """Too little data is an error: an empty split, or fewer than `split.min_test` test inputs.

    With `split.allow_small` the problems come back as warnings instead (the stage prints them).
    """
    problems = [f"split '{name}' is empty" for name in SPLITS if len(parts[name]) == 0]
    n_test = len(parts["test"])
    if 0 < n_test < p.min_test:
        problems.append(
            f"test has {n_test} distinct inputs, fewer than split.min_test={p.min_test}"
        )
    if problems and not p.allow_small:
        sizes = {name: len(parts[name]) for name in SPLITS}
        raise DataError(
            f"too little data: {'; '.join(problems)} (sizes {sizes}); add data, lower "
            "split.min_test, or set split.allow_small: true"
        )
    return problems
