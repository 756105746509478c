"""Activation memory of the polychromic packed pass: loss.kl_pass fused against separate, side by side.

    python bench/kl_pass_memory.py --model qwen2.5-coder-0.5b-instruct --problems 2 --scale-to 16
    python bench/kl_pass_memory.py --model tiny-random

What the backward keeps (the tensors autograd saves, counted once per storage through
`torch.autograd.graph.saved_tensors_hooks`) while `Trainer.packed_pass(..., kl=True)` builds the
step's graph: B problems, each a prompt of P tokens, its reference of R and N samples of L (random
token ids: memory depends on the lengths, not on the text). The LM head runs in CUDA's chunks
(`packed_lm.logprob_chunk` forced), so the numbers are the GPU's graph, computed on the CPU. The
fused pass runs a second copy of every row with the LoRA update zeroed and keeps its activations
for the backward too; the separate pass takes the reference without grad, so nothing of it is
saved. A GPU step peaks at the weights + these saved tensors + the transient buffers of the
largest op; `--scale-to` extrapolates the saved bytes linearly in B (they are per token). Under
gradient checkpointing (third row) the forward keeps each layer's input only; the backward
recomputes one layer at a time, which adds about one layer's share of the separate row.

The question it answers (RESULTS.md, code sweep): the 0.5B coder peaked at 56 GiB a process on
the H200 at 16 problems a step with the fused pass, so two fit one GPU; how much does separate
save?
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lib.config import params_for  # noqa: E402
from lib.models import load_model  # noqa: E402
from lib.train import Trainer, attach_lora, packed_lm  # noqa: E402
from lib.train.examples import Example  # noqa: E402

GIB = 2**30


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for the backward while `fn()` runs."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model.base (default: params.yaml's)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--problems", type=int, default=2)
    ap.add_argument("--samples", type=int, default=None, help="N (default: loss.num_samples)")
    ap.add_argument("--prompt", type=int, default=120)
    ap.add_argument("--reference", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--scale-to", type=int, default=16, help="problems a step to extrapolate to")
    args = ap.parse_args()

    over = {"device": "cpu", "dtype": args.dtype}
    mp = params_for("model", **over, **({"base": args.model} if args.model else {}))
    model, tok = load_model(mp)
    model = attach_lora(model, params_for("lora"), mp)
    n = args.samples or params_for("loss").num_samples
    vocab = model.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)

    def ids(k: int) -> list[int]:
        return torch.randint(0, vocab, (k,), generator=g).tolist()

    batch = []
    for i in range(args.problems):
        prompt, ref = ids(args.prompt), ids(args.reference)
        batch.append(Example(i, prompt + ref, [-100] * args.prompt + ref, args.prompt, "",
                             "code", {}, ("",)))  # fmt: skip
    completions = [[ids(args.new_tokens) for _ in range(n)] for _ in batch]
    packed_lm.logprob_chunk = lambda device, sharded: packed_lm.LOGPROB_CHUNK_ROWS  # CUDA's

    rows, tokens = [], args.problems * (args.prompt + args.reference + n * args.new_tokens)
    for mode in ("separate", "fused", "separate + checkpointing"):
        if mode.endswith("checkpointing"):  # what model.gradient_checkpointing does in training
            model.get_base_model().gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.train()
        kl_pass = mode.split()[0]
        loss = params_for("loss", kl_pass=kl_pass, diversity="lexical", num_samples=n)
        tr = Trainer("polychromic", model, tok, batch, params_for("train"), 0, loss)
        b = saved_bytes(lambda tr=tr: tr.packed_pass(batch, completions, kl=True))
        rows.append((mode, b))
    base = rows[0][1]
    print(f"{mp.base}, {args.dtype}, B={args.problems} problems, N={n}, P={args.prompt}, "
          f"R={args.reference}, L={args.new_tokens}: {tokens:,} packed tokens")  # fmt: skip
    print(f"| kl_pass | saved for backward (GiB) | × separate | at B={args.scale_to} (GiB) |")
    print("|---|---|---|---|")
    for mode, b in rows:
        at = b / args.problems * args.scale_to / GIB
        print(f"| {mode} | {b / GIB:.3f} | {b / base:.2f} | {at:.1f} |")


if __name__ == "__main__":
    main()
