"""The packed pass's row gather (lib/train/packed_lm.kept_rows): its gradient adds a repeated row's
grads in `keep`'s order. `x[keep]`'s backward (`index_put_(accumulate=True)`) adds repeats on a
CPU with atomic float adds from several threads in whatever order they reach them: under CPU
load the default run's step 4 gave another gradient on some replays (`scripts/replay_step.py`,
2026-12-01), so the same inputs stopped giving the same adapter bytes."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lib.train.packed_lm import PackedLM, kept_rows


def test_repeated_rows_add_their_grads_in_keep_order():
    # Row 0 is kept three times, with grads 1e8, 1, -1e8 (float32, whose spacing at 1e8 is 8):
    # in keep's order (0 + 1e8) + 1 = 1e8, then - 1e8 = 0; any other order gives 1 or 0 by other
    # roundings, e.g. (1e8 - 1e8) + 1 = 1. Row 2 kept once: its grad 5; row 1 never: 0.
    x = torch.arange(6.0).reshape(3, 2).requires_grad_()
    keep = torch.tensor([0, 2, 0, 0])
    y = kept_rows(x, keep)
    assert torch.equal(y, x.detach()[keep])  # the forward is the plain gather
    g = torch.tensor([[1e8, 1e8], [5.0, 5.0], [1.0, 1.0], [-1e8, -1e8]])
    y.backward(g)
    assert x.grad.tolist() == [[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        # index_put(self, indices, values, accumulate=False)
        accumulate = name.startswith("aten.index_put") and bool(
            kwargs.get("accumulate", args[3] if len(args) > 3 else False)
        )
        self.calls.append((name, accumulate))
        return func(*args, **kwargs)


def test_the_packed_pass_never_accumulates_rows_with_index_put_on_cpu():
    # A real PackedLM forward and backward whose kept positions repeat (one prompt's last position
    # kept for each of its 4 samples, as in training): the backward adds the repeats with
    # index_add_, never with index_put_'s threaded accumulate (the planted `hidden[keep]` does).
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    lm = PackedLM(get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=["q_proj"])))
    width = 12
    ids = torch.randint(0, 64, (1, width))
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = torch.zeros(1, 1, width, width).masked_fill_(~causal, torch.finfo(torch.float32).min)
    pos = torch.arange(width)[None]
    keep = torch.tensor([3, 3, 3, 3, 4, 5, 6, 7])
    with _Ops() as ops:
        lm(ids, mask, pos, keep).square().mean().backward()
    names = {name for name, _ in ops.calls}
    assert "aten.index_add_" in names or "aten.index_add" in names, sorted(names)
    assert not [c for c in ops.calls if c[0].startswith("aten.index_put") and c[1]], ops.calls
