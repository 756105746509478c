"""LLM-judge evaluation: pairwise win rates of polychromic and judge-based Pass@k.

Backends: `anthropic` (Claude through the SDK, cached, budgeted, retried) and `local` (a local
model's log-probabilities of the verdicts; offline, clearly labelled). See docs/judge.md.
"""

from lib.judge.params import JudgeParams
from lib.judge.run import make_backend, resolve_backend, run_judge

__all__ = ["JudgeParams", "make_backend", "resolve_backend", "run_judge"]
