"""Full-vocabulary top-p nucleus: the stable sort (`_nucleus_keep`) vs the sort-free bisection
(`_nucleus_keep_threshold`), eager and (CUDA) compiled, side by side on the same probabilities;
then the top-p draw by rejection (`draw_rejection`) against `draw`.

    python bench/draw.py --device cpu --rows 32 --vocab 49152
    python bench/draw.py --device cuda            # 320 rows × Qwen3's 151,936 tokens

Distributions: "flat" = softmax(0.3·randn), what random-weight logits give (the nucleus needs
most of the vocabulary), and "peaked" = softmax(6·randn). Per distribution, median times (CUDA
events on a GPU) of: the sort nucleus; the threshold nucleus run eagerly; on CUDA the threshold
nucleus compiled as `draw` uses it (built before timing); and a whole `draw` through the sort vs
through `_full_nucleus` (the compiled nucleus from 2^24 probabilities on CUDA, else the sort),
each with its ratio to the sort.
"equal": every nucleus and both draws equal (torch.equal).
Second table, the rejection draw (`draw_rejection`: `--rounds` R proposals from the full
distribution, each accepted iff its token is in the nucleus, rows rejected R times redrawn by
`draw`), for both kinds of proposals: "independent" (R races of their own) and "ranked" (the R
best of `draw`'s own race, which gives `draw`'s token). Columns: `draw_rejection` eager and
compiled (CUDA, or `--compile` on a CPU), with its fallback's host sync; the compiled rounds
alone (`rejection_rounds`, no fallback, no sync: what a CUDA graph could hold); the rows rejected
R times; "valid": every token drawn is in its row's nucleus; "= draw": tokens equal to `draw`'s
(eager, compiled; only "ranked" is meant to match, and compiled only up to the last bits of
inductor's log). On CUDA it then runs both threshold nuclei and the compiled rejection rounds
under `torch.cuda.set_sync_debug_mode("error")`: passed = no op waited on the host. No timed
assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.draw import (  # noqa: E402
    PROPOSALS,
    REJECTION_ROUNDS,
    _compiled_threshold,
    _nucleus_keep,
    _nucleus_keep_threshold,
    draw,
    draw_rejection,
    rejection_rounds,
)


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocator growth, kernel selection
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def sync_free(fn: Callable, *args) -> str:
    fn(*args)  # compiled before the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(*args)
        return "passed"
    except RuntimeError as e:
        return f"FAILED: {str(e).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=320)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=REJECTION_ROUNDS, help="rejection rounds")
    ap.add_argument(
        "--compile", action="store_true", help="compiled rejection columns on a CPU too"
    )
    args = ap.parse_args(argv)
    dev, p, n = torch.device(args.device), args.top_p, args.repeats
    cuda = dev.type == "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    u = torch.rand(args.rows, device=dev, dtype=torch.float64, generator=g)
    where = torch.cuda.get_device_name(dev) if cuda else "CPU"
    print(
        f"{args.rows} rows × V = {args.vocab}, top_p {p}, {where}, torch {torch.__version__}, "
        f"median of {n} (ms, and the sort's time over each)\n"
    )
    print(
        "| probabilities | sort nucleus | threshold, eager | threshold, compiled "
        "| draw through the sort | draw | equal |\n|---|---|---|---|---|---|---|"
    )
    dists = {}
    for name, scale in (("flat", 0.3), ("peaked", 6.0)):
        probs = torch.softmax(
            scale * torch.randn(args.rows, args.vocab, device=dev, generator=g), -1
        )
        dists[name] = probs
        fns = {"sort": _nucleus_keep, "eager": _nucleus_keep_threshold}
        if cuda:
            fns["compiled"] = _compiled_threshold()
        ms = {k: median_ms(lambda f=f: f(probs, p), dev, n) for k, f in fns.items()}  # noqa: B023
        d_sort = median_ms(lambda: draw(probs, u, p, full=_nucleus_keep), dev, n)  # noqa: B023
        d_new = median_ms(lambda: draw(probs, u, p), dev, n)  # noqa: B023
        ref = _nucleus_keep(probs, p)
        same = all(torch.equal(f(probs, p), ref) for f in fns.values())
        same = same and torch.equal(draw(probs, u, p, full=_nucleus_keep), draw(probs, u, p))
        cell = {k: f"{v:.2f} ({ms['sort'] / v:.2f}×)" for k, v in ms.items()}
        print(
            f"| {name} | {ms['sort']:.2f} | {cell['eager']} | {cell.get('compiled', '—')} "
            f"| {d_sort:.2f} | {d_new:.2f} ({d_sort / d_new:.2f}×) | {same} |"
        )
    rejection_table(dists, u, p, args, dev)
    if cuda:
        for k in ("eager", "compiled"):
            print(
                f"\n{k} threshold nucleus under set_sync_debug_mode('error'): "
                f"{sync_free(fns[k], probs, p)}",
                end="",
            )
        for prop in PROPOSALS:
            free = sync_free(
                lambda *a, k=prop: rejection_rounds(*a, proposals=k), probs, u, p, args.rounds
            )
            print(
                f"\ncompiled rejection rounds ({prop}) under set_sync_debug_mode('error'): {free}"
            )


def rejection_table(dists: dict, u: torch.Tensor, p: float, args, dev) -> None:
    compiled = dev.type == "cuda" or args.compile
    rounds, n = args.rounds, args.repeats
    print(
        f"\nRejection, {rounds} rounds (ms, and `draw`'s time over each)\n\n"
        "| probabilities | proposals | draw | rejection, eager | rejection, compiled "
        "| compiled rounds alone (no sync) | rejected R times | valid | = draw |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for name, probs in dists.items():
        kept = _nucleus_keep(probs, p) > 0
        ref = draw(probs, u, p)
        d_ms = median_ms(lambda: draw(probs, u, p), dev, n)  # noqa: B023
        for prop in PROPOSALS:
            kw = {"proposals": prop}
            draws = {
                "eager": lambda pr, kw=kw: draw_rejection(pr, u, p, rounds, compiled=False, **kw)
            }
            fns = dict(draws)
            if compiled:
                draws["compiled"] = lambda pr, kw=kw: draw_rejection(
                    pr, u, p, rounds, compiled=True, **kw
                )
                fns["compiled"] = draws["compiled"]
                fns["rounds"] = lambda pr, kw=kw: rejection_rounds(
                    pr, u, p, rounds, compiled=True, **kw
                )
            ms = {k: median_ms(lambda f=f: f(probs), dev, n) for k, f in fns.items()}  # noqa: B023
            tok, rejected = rejection_rounds(probs, u, p, rounds, compiled=compiled, **kw)
            valid = bool(kept[~rejected].gather(-1, tok[~rejected][:, None]).all())
            same = []
            for f in draws.values():
                got = f(probs)
                valid = valid and bool(kept.gather(-1, got[:, None]).all())
                same.append(f"{int((got == ref).sum())}/{len(ref)}")
            cell = {k: f"{v:.2f} ({d_ms / v:.2f}×)" for k, v in ms.items()}
            print(
                f"| {name} | {prop} | {d_ms:.2f} | {cell['eager']} | {cell.get('compiled', '—')} "
                f"| {cell.get('rounds', '—')} | {int(rejected.sum())}/{len(rejected)} | {valid} "
                f"| {', '.join(same)} |"
            )


if __name__ == "__main__":
    main()
