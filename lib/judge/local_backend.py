"""An offline judge: a local causal LM scores each verdict by its log-probability.

For a question with choices (A, B, tie) the judge prompt (through the chat template when the
tokenizer has one) is followed by `Verdict: `, and each choice's tokens are scored; the verdict is
the choice with the highest summed log-probability. It needs no network and no key, so
`dvc repro` runs offline, but a 135M model is a weak judge with a strong position bias: its win
rates are labelled `local` everywhere and are no substitute for the API judge.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm import tqdm

from lib.judge.prompts import Answer, Question

VERDICT_PREFIX = "Verdict:"


class LocalJudge:
    name = "local"

    def __init__(self, model: Any, tokenizer: Any, model_name: str, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = f"local:{model_name}"
        self.batch_size = max(1, batch_size)
        self.n_questions = 0

    def prompt_text(self, q: Question) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            messages = [
                {"role": "system", "content": q.system},
                {"role": "user", "content": q.user},
            ]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{q.system}\n\n{q.user}\n\n"
        return text + VERDICT_PREFIX

    def _rows(
        self, qi: int, q: Question
    ) -> list[tuple[list[int], int, list[tuple[int, int, int]]]]:
        """Forward rows for one question: (token ids, n scored trailing tokens, next-token
        targets (question, choice, token id) read after the last position).

        When every choice is a single token (" A", " B", " tie" in most vocabularies) one row, the
        prompt, scores them all from its next-token distribution: a third of the compute of one
        row per choice, and the same numbers.
        """
        prompt = list(self.tokenizer(self.prompt_text(q), add_special_tokens=False)["input_ids"])
        choice_ids = [
            list(self.tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in q.choices
        ]
        if all(len(c) == 1 for c in choice_ids):
            return [(prompt, 0, [(qi, ci, c[0]) for ci, c in enumerate(choice_ids)])]
        return [(prompt + c, len(c), [(qi, ci, -1)]) for ci, c in enumerate(choice_ids)]

    @torch.no_grad()
    def choice_logprobs(self, questions: list[Question], desc: str = "judge") -> list[list[float]]:
        """Summed log-probability of each choice's tokens after each question's prompt."""
        rows = [r for qi, q in enumerate(questions) for r in self._rows(qi, q)]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else 0
        # Similar lengths in a batch waste less padding; results are keyed, so order is free.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        results: dict[tuple[int, int], float] = {}
        for start in tqdm(
            range(0, len(order), self.batch_size), desc=f"{desc} (local judge)", leave=False
        ):
            idx = order[start : start + self.batch_size]
            width = max(len(rows[i][0]) for i in idx)
            keep = max(rows[i][1] for i in idx) + 1
            # Left padding lines every row's scored tokens up at the end, so only the last `keep`
            # positions need logits (the full [b, t, vocab] tensor would be ~GBs for long prompts).
            ids = torch.full((len(idx), width), pad, dtype=torch.long)  # [b, t]
            mask = torch.zeros((len(idx), width), dtype=torch.long)  # [b, t]
            for row, i in enumerate(idx):
                seq = rows[i][0]
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [b, t], real tokens from 0
            logits = self._last_logits(ids.to(device), mask.to(device), positions.to(device), keep)
            logp = torch.log_softmax(logits.float(), dim=-1)  # [b, keep, v]
            for row, i in enumerate(idx):
                seq, n, targets = rows[i]
                for qi, ci, tok in targets:
                    if n == 0:  # shared prompt row: the choice is the next token
                        results[(qi, ci)] = float(logp[row, keep - 1, tok])
                        continue
                    total = 0.0
                    for j in range(n):
                        # token j of the choice sits at width-n+j; its logits come from the
                        # position before, which is kept index keep-1-n+j.
                        total += float(logp[row, keep - 1 - n + j, seq[len(seq) - n + j]])
                    results[(qi, ci)] = total
        return [
            [results[(qi, ci)] for ci in range(len(q.choices))] for qi, q in enumerate(questions)
        ]

    def _last_logits(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int
    ) -> torch.Tensor:
        """Logits of the last `keep` positions, [b, keep, v]."""
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        try:
            return self.model(**kwargs, logits_to_keep=keep).logits[:, -keep:]
        except TypeError:  # a model without `logits_to_keep`
            return self.model(**kwargs).logits[:, -keep:]

    def ask(self, questions: list[Question], desc: str = "judge") -> list[Answer]:
        self.n_questions += len(questions)
        out = []
        for q, lps in zip(questions, self.choice_logprobs(questions, desc), strict=True):
            m = max(lps)
            z = sum(math.exp(v - m) for v in lps)
            probs = [math.exp(v - m) / z for v in lps]
            best = max(range(len(lps)), key=lambda i: (lps[i], -i))  # ties → earliest choice
            reason = "local log-prob judge: " + ", ".join(
                f"p({c})={p:.3f}" for c, p in zip(q.choices, probs, strict=True)
            )
            out.append(Answer(q.choices[best], reason))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "judge_model": self.model_name,
            "questions": self.n_questions,
            "note": (
                "LOCAL judge: verdicts are the argmax of a small local model's log-probabilities "
                "of 'A' / 'B' / 'tie'; not comparable with Claude judge results"
            ),
        }
