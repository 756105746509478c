"""Prompt formatting shared by training and generation: one place decides what the model sees.

With a chat template (SmolLM2, Qwen3, ...) the user turn is the input and the assistant turn the
target, rendered by the tokenizer's own `apply_chat_template`; without one, a plain
"Input: ...\\nOutput: " format with EOS after the target. `training_example` renders the whole
conversation and cuts it at the generation prompt, so the prompt tokens it masks are exactly the
tokens `chat_prompt_ids` gives the sampler.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100  # label value that cross-entropy skips (prompt and padding tokens)
PLAIN_PROMPT = "Input: {input}\nOutput: "


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt_text(tokenizer: Any, user_text: str) -> str:
    """The prompt string, ending where the model's answer begins."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False
        )
    return PLAIN_PROMPT.format(input=user_text)


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def chat_prompt_ids(tokenizer: Any, user_text: str) -> list[int]:
    """Token ids of the prompt for `user_text` (what sampling and generation feed the model)."""
    # A chat template writes its own special tokens; the plain format gets the tokenizer's BOS, if any.
    return _encode(
        tokenizer, chat_prompt_text(tokenizer, user_text), special=not has_chat_template(tokenizer)
    )


def _target_text(tokenizer: Any, user_text: str, target: str, prompt: str) -> str:
    if not has_chat_template(tokenizer):
        return target + (tokenizer.eos_token or "")
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}, {"role": "assistant", "content": target}],
        tokenize=False,
    )
    if not full.startswith(prompt):
        raise ValueError(
            "chat template renders the assistant turn without the generation prompt as its prefix; "
            "cannot tell prompt tokens from target tokens"
        )
    # The template's trailing newline after the end-of-turn token is never generated (sampling
    # stops at that token), so it is not trained either.
    return full[len(prompt) :].rstrip("\n")


def training_example(
    tokenizer: Any, user_text: str, target: str, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt + target tokens; labels are IGNORE_INDEX on the prompt.

    Over `max_length` the target is cut from the right; a prompt that alone does not leave room for
    one target token keeps its last tokens (the end of the prompt and the answer cue matter most).
    """
    prompt_ids = chat_prompt_ids(tokenizer, user_text)
    target_ids = _encode(
        tokenizer,
        _target_text(tokenizer, user_text, target, chat_prompt_text(tokenizer, user_text)),
        special=False,
    )
    if not target_ids:
        raise ValueError("target renders to zero tokens")
    if max_length is not None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        prompt_ids = prompt_ids[-(max_length - 1) :]
        target_ids = target_ids[: max_length - len(prompt_ids)]
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    return input_ids, labels
