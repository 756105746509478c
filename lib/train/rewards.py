"""Task rewards r(y) ∈ [0, 1] for the set objectives: pure functions and one factory.

    RewardFn(metas, references, texts) -> (B, N) float32 tensor in [0, 1]

B examples with N samples each; `metas[b]` is example b's meta (a mapping or its JSON string),
`references[b]` the human references of its input in train. By domain (`make_reward("auto", ...)`):

- code → `code_tests`: the fraction of the problem's tests (`meta["tests"]`, standalone asserts, after
  `meta["setup"]`) the sample passes, run in `lib.sandbox`, one child per sample that runs every test
  separately with its own CPU-time timer. The same run records each test input's behaviour (the
  canonical repr of `f(x)` or the exception's type) for `credit.functional_classes`.
- qa → `qa_match`: 1 if the sample matches an accepted answer under the qa checker's rule
  (`lib.checkers.qa_pass`: SQuAD-normalised whole-token containment or token F1 ≥ threshold).
- social, creative, jsonl → `human_similarity`: max MiniLM cosine of the sample to the input's human
  replies, clipped to [0, 1]. The training encoder, never an evaluation instrument (docs/training.md).

`RewardFn.submit` returns a future, so the sandbox runs while the trainer's GPU forward does.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import functools
import json
import re
import secrets
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lib.checkers import qa_pass
from lib.prompts import FENCE, extract_code_body
from lib.sandbox import SandboxLimits, run_batch

REWARDS = ("code_tests", "qa_match", "human_similarity", "auto")
AUTO = {
    "code": "code_tests",
    "qa": "qa_match",
    "social": "human_similarity",
    "creative": "human_similarity",
    "jsonl": "human_similarity",
}
NO_PROGRAM = "<no program>"  # the behaviour of prose or a syntax error on every test input
# The filename samples are parsed under: their compile warnings (an invalid escape in a string,
# thousands a GPU run's log on 3.12) say nothing about the pipeline and are dropped by this
# filter, which matches their filename only (a per-call catch_warnings is not thread-safe, and
# the reward runs on worker threads).
SAMPLE_FILE = "<sample>"
for _category in (SyntaxWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=re.escape(SAMPLE_FILE) + r"\Z")

Metas = Sequence[Mapping[str, Any] | str]
Texts = Sequence[Sequence[str]]
Behaviour = tuple[str, ...]  # one entry per test: the probes' outcomes, joined


@dataclass(frozen=True)
class Scored:
    rewards: torch.Tensor  # (B, N) float32 in [0, 1]
    behaviours: list[list[Behaviour]] | None  # code only: [b][i] → sample i's behaviour


class RewardFn:
    """A named reward: call it for the (B, N) tensor, `score` for behaviours too, `submit` for a future."""

    _pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reward")

    def __init__(self, name: str, fn: Callable[[Metas, Texts, Texts], Scored]):
        self.name, self._fn = name, fn

    def score(self, metas: Metas, references: Texts, texts: Texts) -> Scored:
        if not len(metas) == len(references) == len(texts):
            raise ValueError(
                f"{self.name}: {len(metas)} metas, {len(references)} reference lists, "
                f"{len(texts)} sample groups"
            )
        if len({len(g) for g in texts}) > 1:
            raise ValueError(f"{self.name}: groups of unequal size {[len(g) for g in texts]}")
        return self._fn(metas, references, texts)

    def __call__(self, metas: Metas, references: Texts, texts: Texts) -> torch.Tensor:
        return self.score(metas, references, texts).rewards

    def submit(self, metas: Metas, references: Texts, texts: Texts) -> cf.Future[Scored]:
        """`score` on a worker thread (copies its inputs first, so the caller may reuse them)."""
        args = (
            [m if isinstance(m, str) else dict(m) for m in metas],
            _copy(references),
            _copy(texts),
        )
        return self._pool.submit(self.score, *args)


def _copy(groups: Texts) -> list[list[str]]:
    return [list(g) for g in groups]


# ---------------------------------------------------------------------------------------------
# code


def extract_program(text: str, meta: Mapping[str, Any] | None = None) -> str | None:
    """The program a sample stands for, built the way the evaluation's checker builds it.

    With a HumanEval-form `meta["prompt"]` (signature and docstring; MBPP rows have one too), the
    sample is a body or a whole function: `prompt + extract_code_body(text, entry_point)`, exactly
    what `lib.checkers.code_passes` executes. Without one: the first fenced block, else the text.
    None when that is empty or not valid Python: prose and syntax errors score 0 without running.
    """
    if meta and meta.get("prompt") and meta.get("entry_point"):
        src = meta["prompt"] + extract_code_body(text, meta["entry_point"])
        if not extract_code_body(text, meta["entry_point"]).strip():
            return None
    else:
        m = FENCE.search(text)
        src = m.group(1) if m else text
    if not src.strip():
        return None
    try:
        ast.parse(src, SAMPLE_FILE)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return src


def call_probes(test: str, entry_point: str) -> list[str]:
    """The outermost calls of `entry_point` in one assert: `assert f(x) == y` → ["f(x)"].

    Evaluated on their own, their outcomes are the sample's behaviour on that test's inputs.
    A test without such a call (HumanEval's `check(f)`) has no probes: its pass flag stands in.
    """
    probes: list[str] = []

    def visit(node: ast.AST) -> None:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == entry_point
        ):
            probes.append(ast.unparse(node))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(test))
    return probes


# Runs in the sandbox as program.py. The key arrives on stdin (after the runner's nonce), so the
# sample cannot print a result line by accident; the sample's own prints go to a sink. Each probe
# and each test runs under its own timer of CPU seconds (ITIMER_PROF): a loop is stopped after the
# same work however many sandboxes share the cores, where a wall timer grows with the load. A test
# whose probe timed out is not run (it calls the same function on the same input) and fails: a
# hung sample costs one timer per test, not two. _Stop is a BaseException so `except Exception`
# in the sample cannot swallow it.
_HARNESS = r"""
import hashlib, json, os, re, signal, sys
_KEY = sys.stdin.readline().strip()
_FD = os.dup(1)
_SRC, _SETUP, _TESTS, _PROBES, _LIMIT = {args}


class _Stop(BaseException):
    pass


def _alarm(signum, frame):
    raise _Stop()


class _Sink:
    def write(self, s):
        return len(s)

    def flush(self):
        pass


def _canon(v, depth=0):
    if depth > 30:
        return "..."
    t = type(v)
    if t in (set, frozenset):
        return t.__name__ + "{" + ",".join(sorted(_canon(x, depth + 1) for x in v)) + "}"
    if t in (list, tuple):
        return t.__name__ + "[" + ",".join(_canon(x, depth + 1) for x in v) + "]"
    if t is dict:
        return "{" + ",".join(_canon(a, depth + 1) + ":" + _canon(b, depth + 1) for a, b in v.items()) + "}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))


def _timed(fn):
    signal.setitimer(signal.ITIMER_PROF, _LIMIT)
    try:
        return "r:" + fn()
    except _Stop:
        return "timeout"
    except BaseException as e:
        return "e:" + type(e).__name__
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def _short(s):
    return s if len(s) <= 80 else "h:" + hashlib.sha256(s.encode()).hexdigest()[:24]


signal.signal(signal.SIGPROF, _alarm)
_ns = {"__name__": "__main__"}
sys.stdout = _Sink()
_load = _timed(lambda: exec(_SRC, _ns) or "")
if _load == "r:" and _SETUP:
    _load = _timed(lambda: exec(_SETUP, _ns) or "")
for _i, _test in enumerate(_TESTS):
    if _load != "r:":
        _out = {"i": _i, "pass": False, "b": "load " + _load}
    else:
        _b = [_short(_timed(lambda: _canon(eval(_p, _ns)))) for _p in _PROBES[_i]]
        _ok = "timeout" not in _b and _timed(lambda: exec(_test, _ns) or "") == "r:"
        _out = {"i": _i, "pass": _ok, "b": "|".join(_b) if _b else ("pass" if _ok else "fail")}
    os.write(_FD, ("\n" + _KEY + " " + json.dumps(_out) + "\n").encode())
sys.stdout = sys.__stdout__
"""


def _meta(m: Mapping[str, Any] | str) -> Mapping[str, Any]:
    return json.loads(m) if isinstance(m, str) else m


def code_test_results(
    metas: Metas, texts: Texts, test_timeout_s: float, memory_mb: int = 512
) -> tuple[torch.Tensor, list[list[Behaviour]]]:
    """Run every sample against its problem's tests: (B, N) fraction passed, and behaviours.

    One sandbox child per parseable sample, all in flight at once (`lib.sandbox.run_batch`).
    `test_timeout_s` is CPU seconds per probe or test; the child's wall limit covers every timer
    twice over plus start-up (a sample that sleeps uses no CPU: that limit ends it), so a hung
    sample costs at most that, alone. A test whose result line never came (crash, wall limit,
    `os._exit`) counts as failed.
    """
    if not test_timeout_s > 0:
        raise ValueError(f"test_timeout_s must be > 0, got {test_timeout_s}")
    jobs: list[tuple[int, int, str, int]] = []  # (b, i, program, n_tests)
    stdins: list[str] = []
    keys: list[str] = []
    limits: list[float] = []
    shape: list[tuple[int, int]] = []
    for b, (m, group) in enumerate(zip(metas, texts, strict=True)):
        meta = _meta(m)
        tests, entry = list(meta.get("tests") or []), meta.get("entry_point")
        if not tests or not entry:
            raise ValueError(
                f"example {b}: code meta needs 'tests' and 'entry_point', has {sorted(meta)}"
            )
        probes = [call_probes(t, entry) for t in tests]
        shape.append((len(group), len(tests)))
        for i, text in enumerate(group):
            src = extract_program(text, meta)
            if src is None:
                continue
            args = repr((src, meta.get("setup") or "", tests, probes, float(test_timeout_s)))
            key = secrets.token_hex(16)
            jobs.append((b, i, _HARNESS.replace("{args}", args, 1), len(tests)))
            stdins.append(key + "\n")
            keys.append(key)
            limits.append(5.0 + 2 * test_timeout_s * (2 + sum(len(p) + 1 for p in probes)))
    n = max((s[0] for s in shape), default=0)
    rewards = torch.zeros(len(shape), n)
    behaviours = [[(NO_PROGRAM,) * t for _ in range(g)] for g, t in shape]
    if jobs:
        lim = SandboxLimits(timeout_s=max(limits), memory_mb=memory_mb)
        results = run_batch([j[2] for j in jobs], lim, stdins)
        for (b, i, _, n_tests), key, res in zip(jobs, keys, results, strict=True):
            passed, beh = _parse(res.stdout_tail, key, n_tests)
            rewards[b, i] = sum(passed) / n_tests
            behaviours[b][i] = beh
    return rewards, behaviours


def _parse(stdout: str, key: str, n_tests: int) -> tuple[list[bool], Behaviour]:
    passed, beh = [False] * n_tests, ["missing"] * n_tests
    prefix = key + " "
    for line in stdout.splitlines():
        if line.startswith(prefix):
            row = json.loads(line[len(prefix) :])
            passed[row["i"]], beh[row["i"]] = bool(row["pass"]), str(row["b"])
    return passed, tuple(beh)


# ---------------------------------------------------------------------------------------------
# qa and the human-reference similarity


def qa_match(texts: Texts, references: Texts, f1_threshold: float) -> torch.Tensor:
    """(B, N): 1.0 where the sample passes the qa checker's rule against any accepted answer."""
    return torch.tensor(
        [
            [float(qa_pass(t, refs, f1_threshold)) for t in group]
            for group, refs in zip(texts, references, strict=True)
        ],
        dtype=torch.float32,
    )


EmbedFn = Callable[[Sequence[str]], torch.Tensor]  # texts → (M, D) unit-normalised


def human_similarity(
    texts: Texts, references: Texts, embed_fn: EmbedFn, embed_refs: EmbedFn | None = None
) -> torch.Tensor:
    """(B, N): max over the input's human replies of cos(sample, reply), clipped to [0, 1].

    The samples are embedded in one call; each input's replies in a call of their own
    (`embed_refs`, default `embed_fn`), so a cache of them (`make_reward`) returns the same
    floats as embedding them afresh. An input without a reply cannot be scored.
    """
    for b, refs in enumerate(references):
        if not refs:
            raise ValueError(
                f"human_similarity: example {b} has no human reference to compare with"
            )
    embed_refs = embed_refs or embed_fn
    n = len(texts[0]) if texts else 0
    emb = embed_fn([t for g in texts for t in g]).float().view(len(texts), n, -1)  # (B, N, D)
    out = torch.zeros(len(texts), n)
    for b, refs in enumerate(references):
        r = embed_refs(tuple(refs)).float().to(emb.device)  # (R_b, D)
        out[b] = (emb[b] @ r.T).max(-1).values.clamp(0.0, 1.0).cpu()
    return out


# ---------------------------------------------------------------------------------------------


def make_reward(
    name: str,
    *,
    domain: str | None = None,
    qa_f1_threshold: float | None = None,
    test_timeout_s: float | None = None,
    embed_fn: EmbedFn | None = None,
    device: str = "cpu",
) -> RewardFn:
    """The `loss.reward` named `name` ("auto" picks by `domain`). The arguments a reward needs
    come from params.yaml (the trainer passes them); missing ones fail here, not mid-run."""
    if name == "auto":
        if domain not in AUTO:
            raise ValueError(
                f"loss.reward=auto: no reward for domain {domain!r}; known {sorted(AUTO)}"
            )
        name = AUTO[domain]
    if name == "code_tests":
        if test_timeout_s is None:
            raise ValueError("the code_tests reward needs test_timeout_s (seconds per test)")
        timeout = float(test_timeout_s)

        def code(metas: Metas, references: Texts, texts: Texts) -> Scored:
            return Scored(*code_test_results(metas, texts, timeout))

        return RewardFn(name, code)
    if name == "qa_match":
        if qa_f1_threshold is None:
            raise ValueError("the qa_match reward needs qa_f1_threshold (the qa checker's)")
        thr = float(qa_f1_threshold)
        return RewardFn(name, lambda metas, refs, texts: Scored(qa_match(texts, refs, thr), None))
    if name == "human_similarity":
        if embed_fn is None:
            from lib.embed import embed_tensor

            def embed_fn(texts: Sequence[str]) -> torch.Tensor:
                return embed_tensor(texts, device=device)

        fn = embed_fn

        # Train references repeat every epoch (social's opening prompts have ~230 replies each).
        @functools.cache
        def refs_fn(refs: tuple[str, ...]) -> torch.Tensor:
            return fn(list(refs))

        def similarity(metas: Metas, refs: Texts, texts: Texts) -> Scored:
            return Scored(human_similarity(texts, refs, fn, refs_fn), None)

        return RewardFn(name, similarity)
    raise ValueError(f"loss.reward: unknown {name!r}, expected one of {REWARDS}")
