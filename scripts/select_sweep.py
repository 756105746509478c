"""Apply RESULTS.md's selection rule to a val sweep's DVC experiments, and draw its Pareto front.

python scripts/select_sweep.py --rev 3107435 --out reports/social_sweep/selection
python scripts/select_sweep.py --exp-json exps.json --primary pass_at_10 --out reports/code_sweep/selection

Reads every experiment that `dvc exp show --json` lists with params matching `--where` (default
eval_split=val) and a scored polychromic (`data/scores/polychromic.parquet` at the experiment's
commit, through `dvc.api`; score it with `dvc repro --allow-missing score@polychromic` where the
adapters stayed on the GPU machine). Writes <out>.csv, <out>.md (the table RESULTS.md quotes) and
<out>.pdf/.png (mean held-out semantic diversity against the primary metric, front marked), and
prints the chosen configuration. The rule itself is `lib.selection.select`.

A sweep that ran over several GPU leases is read from the folders scripts/keep_exp.py kept in git
(params.yaml, dvc.lock, data/scores/polychromic.parquet checked against the lock), not from refs
that one checkout holds:

python scripts/select_sweep.py --kept reports/code_sweep/val-* --out reports/code_sweep/selection
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import figures as F  # noqa: E402
from lib import pareto as P  # noqa: E402
from lib.config import params_for  # noqa: E402
from lib.experiments import (  # noqa: E402
    exp_show,
    exp_states,
    flatten,
    lookup,
    stale_at,
    stale_stages,
    where_params,
)
from lib.io import atomic_path  # noqa: E402
from lib.schemas import METRIC, SCORES  # noqa: E402
from lib.selection import select  # noqa: E402

SCORES_FILE = "data/scores/polychromic.parquet"


def experiments(exp_show: list, where: dict) -> dict[str, tuple[str, dict]]:
    """name -> (commit, its params.yaml) of the experiments whose params match `where`: the
    experiments under each baseline, never a baseline commit or the workspace itself."""
    out = {}
    runs = [r for st in exp_show for g in st.get("experiments") or [] for r in g.get("revs") or []]
    for st in exp_states(runs):
        name, rev = st.get("name"), str(st.get("rev", ""))
        if not name:
            continue
        par = (((st.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data")
        if not par or any(lookup(par, k) != v for k, v in where.items()):
            continue
        out[name] = (rev, par)
    return out


CHAIN = ("train_polychromic", "generate@polychromic", "score@polychromic")


def refuse_stale_chain(stale: dict[str, list[str]], what: str) -> None:
    """Stop on a stale stage along CHAIN: its scores would belong to other generations."""
    stale = {k: v for k, v in stale.items() if k in CHAIN}
    if stale:
        raise SystemExit(f"select_sweep: {what}: stale stages in its dvc.lock, {stale}")


def read_scores(rev: str) -> pd.DataFrame | None:
    import dvc.api

    refuse_stale_chain(stale_at(rev), rev[:7])

    try:
        with dvc.api.open(SCORES_FILE, rev=rev, mode="rb") as f:
            table = pq.read_table(io.BytesIO(f.read()))
    except Exception as e:  # not scored (no entry), or its output missing from the cache
        print(f"select_sweep: {rev[:7]}: no {SCORES_FILE} ({type(e).__name__}); skipped")
        return None
    SCORES.check(table.schema, where=f"{SCORES_FILE}@{rev[:7]}")
    return table.to_pandas()


def read_kept(folder: Path, where: dict):
    """(its params.yaml, scores) of a scripts/keep_exp.py folder, or None when its params miss `where`.
    Refuses a folder whose lock is stale along CHAIN or whose scores are not the lock's."""
    import yaml

    par = yaml.safe_load((folder / "params.yaml").read_text(encoding="utf-8"))
    if any(lookup(par, k) != v for k, v in where.items()):
        return None
    lock = yaml.safe_load((folder / "dvc.lock").read_text(encoding="utf-8"))
    refuse_stale_chain(stale_stages(lock), str(folder))
    path = folder / SCORES_FILE
    want = next(
        (o["md5"] for o in lock["stages"][CHAIN[-1]]["outs"] if o["path"] == SCORES_FILE),
        None,
    )
    if not path.exists() or hashlib.md5(path.read_bytes()).hexdigest() != want:
        raise SystemExit(f"select_sweep: {path} is not the output its dvc.lock records ({want})")
    table = pq.read_table(path)
    SCORES.check(table.schema, where=str(path))
    return par, table.to_pandas()


def other_differences(full: dict[str, dict], swept: tuple[str, ...]) -> dict[str, dict]:
    """params.yaml keys besides `swept` whose values differ between the experiments: key ->
    {value: [experiment, ...]}. A sweep run over several leases can differ in more than its
    grid (code's rounds 1 and 2: the KL pass), and its table must say so."""
    flats = {name: flatten(par) for name, par in full.items()}
    out: dict[str, dict] = {}
    for key in sorted(set().union(*flats.values()) - set(swept)):
        groups: dict[str, list[str]] = {}
        for name in sorted(flats):
            value = flats[name].get(key, "(absent)")
            groups.setdefault(str(value), []).append(name)
        if len(groups) > 1:
            out[key] = groups
    return out


def differences_md(diff: dict[str, dict], swept: tuple[str, ...]) -> str:
    if not diff:
        return f"\nThe experiments differ only in {', '.join(swept)}.\n"
    lines = [f"\nBesides {', '.join(swept)}, the experiments differ in:\n"]
    for key, groups in diff.items():
        parts = "; ".join(f"{v} ({', '.join(names)})" for v, names in groups.items())
        lines.append(f"- `{key}`: {parts}")
    return "\n".join(lines) + "\n"


def markdown(df: pd.DataFrame, params: tuple[str, ...], primary: str, diversity: str) -> str:
    head = [
        "Experiment",
        *params,
        METRIC[primary].label,
        "Best − this",
        "Paired SE",
        "Tied",
        METRIC[diversity].label,
        "Chosen",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [
            r["experiment"],
            *(str(r[p]) for p in params),
            f"{r['primary']:.3f}",
            f"{r['diff']:.3f}",
            f"{r['paired_se']:.3f}",
            "yes" if r["tied"] else "no",
            f"{r['diversity']:.3f}",
            "**chosen**" if r["chosen"] else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp-json", type=Path, help="saved `dvc exp show --json` (default: run it)")
    ap.add_argument(
        "--kept", type=Path, nargs="+", help="keep_exp folders, named by folder (no DVC refs)"
    )
    ap.add_argument(
        "--rev",
        help="the sweep's baseline commit (default: the commits `dvc exp show -A` reaches from "
        "HEAD and the branches; a lent machine's snapshot commit is on neither)",
    )
    ap.add_argument("--primary", default="pass_at_10")
    ap.add_argument("--diversity", default="semantic_diversity")
    ap.add_argument("--param", action="append", help="dotted params.yaml key (repeatable)")
    ap.add_argument(
        "--where", action="append", default=[], help="KEY=VALUE (default eval_split=val)"
    )
    ap.add_argument("--out", type=Path, required=True, help="path without suffix")
    ap.add_argument("--formats", default="pdf,png")
    ap.add_argument(
        "--args-out",
        type=Path,
        help="also write the chosen configuration as `dvc exp run` arguments (-S key=value ...), "
        "so a lease can start the test runs right after the sweep, with no hand step between",
    )
    args = ap.parse_args(argv)

    params = tuple(args.param or ["loss.lambda", "loss.objective"])
    where = where_params(args.where or ["eval_split=val"])
    scores, full = {}, {}
    if args.kept:
        for folder in sorted(args.kept):
            got = read_kept(folder, where)
            if got is not None:
                full[folder.name], scores[folder.name] = got
    else:
        shown_exps = exp_show(args.exp_json, ["--rev", args.rev] if args.rev else ["--all-commits"])
        for name, (rev, par) in sorted(experiments(shown_exps, where).items()):
            df = read_scores(rev)
            if df is not None:
                scores[name], full[name] = df, par
    if not scores:
        raise SystemExit(f"select_sweep: no experiment matching {where} has {SCORES_FILE}")
    shown = {name: {p: lookup(par, p) for p in params} for name, par in full.items()}
    table = select(scores, shown, args.primary, args.diversity, smaller_first=params[0])
    diff = other_differences(full, params)
    for key, groups in diff.items():
        print(f"select_sweep: the experiments also differ in {key}: {dict(groups)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(
            markdown(table, params, args.primary, args.diversity) + differences_md(diff, params),
            encoding="utf-8",
        )
    pts = P.front_rows(table.rename(columns={"primary": "quality"}), params)
    fig = P.pareto_figure(pts, METRIC[args.diversity].label, METRIC[args.primary].label)
    paths = F.save(
        fig,
        args.out.parent,
        args.out.name,
        params_for("plot", formats=tuple(args.formats.split(","))),
    )
    chosen = table[table["chosen"]].iloc[0]
    print(
        f"select_sweep: {len(table)} experiments; chosen {chosen['experiment']} "
        + ", ".join(f"{p}={chosen[p]}" for p in params)
    )
    if args.args_out:
        # The chosen run's own params.yaml values, as `-S` parses them (YAML scalars).
        line = " ".join(f"-S {p}={lookup(full[chosen['experiment']], p)}" for p in params)
        with atomic_path(args.args_out) as tmp:
            Path(tmp).write_text(line + "\n", encoding="utf-8")
        paths = [args.args_out, *paths]
    print(
        "select_sweep: wrote "
        + ", ".join(map(str, [args.out.with_suffix(".csv"), args.out.with_suffix(".md"), *paths]))
    )


if __name__ == "__main__":
    main()
