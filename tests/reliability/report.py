"""Run the reliability sweep and write tests/RELIABILITY.md.

    .venv/bin/python -m tests.reliability.report [--kill-seeds 2] [--fault-seeds 5] [--out PATH]

Sections: schema drift (every stage × Parquet input × drift, in-process), the judge under random API
faults / an outage / SIGKILL, hostile code samples, and a full smoke `dvc repro` with a canary
ANTHROPIC_API_KEY (judge on a faulty fake API) whose every written file is scanned, followed by
SIGKILLs of every stage of that repo. Any lost, duplicated or partial item raises, so a written
report means zero items lost. Takes ~20-30 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tests.reliability import artefacts as A
from tests.reliability import faults as F
from tests.reliability import kill as K
from tests.reliability.stage_inputs import CASES, smoke_params

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CKPT = {
    "train_baseline": "models/.ckpt/baseline/state.pt",
    "train_gem": "models/.ckpt/gem/state.pt",
    "train_polychromic": "models/.ckpt/polychromic/state.pt",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def schema_sweep(tmp: Path) -> dict:
    from lib.io import SchemaError

    tmp.mkdir(parents=True)
    params = smoke_params(tmp / "params.yaml")
    tried = refused = 0
    per_stage: dict[str, int] = {}
    for case in CASES:
        for drift in A.drifts(case.schema):
            root = tmp / f"{case.stage}-{case.input}-{drift.label}".replace(":", "_")
            root.mkdir(parents=True)
            argv, target, outputs = case.build(root, params)
            valid = target.with_name(target.name + ".valid")
            target.rename(valid)
            A.write_drifted(valid, drift, target)
            tried += 1
            try:
                case.main()(argv)
            except SchemaError as e:
                A.assert_names_everything(str(e), drift, target, case.schema)
                assert not any(o.exists() for o in outputs), f"{case.id}: output written"
                refused += 1
                per_stage[case.id] = per_stage.get(case.id, 0) + 1
            else:
                raise AssertionError(f"{case.id} accepted {drift.label}")
    return {"tried": tried, "refused_naming_column_file_stage": refused, "per_input": per_stage}


def fault_sweep(tmp: Path, seeds: int) -> dict:
    runs = [F.judge_under_faults(tmp / f"faults-{s}", seed=s) for s in range(seeds)]
    outages = [F.judge_outage_then_rerun(tmp / f"outage-{s}", seed=s) for s in range(2)]
    kills = [F.judge_killed_and_resumed(tmp / f"jkill-{s}", seed=s) for s in range(seeds)]
    kinds: dict[str, int] = {}
    for r in runs:
        for k, v in r["fault_kinds"].items():
            if k != "ok":
                kinds[k] = kinds.get(k, 0) + v
    return {
        "fault_runs": len(runs),
        "questions": sum(r["questions"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "faults": sum(r["faults"] for r in runs),
        "fault_kinds": kinds,
        "outage_runs": len(outages),
        "outage_questions": sum(r["questions"] for r in outages),
        "outage_faults": sum(r["faults"] for r in outages),
        "judge_kills": len(kills),
        "judge_kill_questions": sum(r["questions"] for r in kills),
        "judge_kill_faults": sum(r["faults"] for r in kills),
        "judge_kill_repaid": sum(r["repaid"] for r in kills),
        "lost": sum(r["lost"] for r in runs + outages + kills),
        "duplicates": sum(r["duplicates"] for r in runs + outages),
    }


def sandbox_sweep(tmp: Path) -> dict:
    import os

    from tests.test_reliability_sandbox import run_hostile_batch

    canary = f"canary-{uuid.uuid4().hex}"
    os.environ["ANTHROPIC_API_KEY"] = canary
    try:
        out = run_hostile_batch(tmp, canary)
    finally:
        os.environ.pop("ANTHROPIC_API_KEY", None)
    res = out["results"]
    harmed = (
        out["escaped_file"] or out["connections"] or out["survivors"] or out["canary_in_output"]
    )
    assert not harmed, out
    assert res["good"].passed and res["env_scan"].passed
    assert all(not r.passed for k, r in res.items() if k not in ("good", "env_scan"))
    return {
        "hostile_samples": len(res) - 1,
        "statuses": {k: r.status for k, r in res.items()},
        "escapes": 0,
        "elapsed_s": round(out["elapsed_s"], 1),
    }


def pipeline_sweep(tmp: Path, kill_seeds: int) -> dict:
    from tests.pipeline_util import scratch_repo

    canary = f"sk-ant-CANARY-{uuid.uuid4().hex}"
    script = F.FaultScript(seed=123, fail_rate=0.3)
    api = F.start_api(script)
    root = scratch_repo(tmp / "repo")
    K.EXTRA_ENV.clear()
    K.EXTRA_ENV["ANTHROPIC_API_KEY"] = canary
    try:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["judge"].update(
            {"base_url": api.url, "timeout_s": 0.2, "backoff_base_s": 0.001, "backoff_max_s": 0.004}
        )
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        log("full smoke dvc repro (judge on the faulty fake API, canary key set)")
        t0 = time.monotonic()
        K.dvc_cmd(["repro"], root)
        repro_s = time.monotonic() - t0
        judge = json.loads((root / "metrics" / "judge.json").read_text())
        assert judge["backend"] == "anthropic" and judge["n_missing"] == 0, judge
        assert any(k and canary in k for k in api.keys), "the key never reached the fake API"

        kills = []
        for stage in K.CHANGES:
            log(f"kill sweep: {stage}")
            ref = K.reference(root, stage)
            for seed in range(kill_seeds):
                kills.append(K.kill_once(root, ref, seed))
            if stage in TRAIN_CKPT:
                kills.append(
                    K.kill_once(root, ref, 100, after=TRAIN_CKPT[stage], after_delay_max=0.1)
                )
        prompts = [
            json.dumps(r["messages"])
            for r, s in zip(api.requests, script.served, strict=True)
            if s == "ok"
        ]
        cache = len(list((root / ".cache" / "judge").rglob("*.json")))
        assert cache == len(set(prompts)), (cache, len(set(prompts)))
        scanned, hits = K.scan_for(root, canary)
        assert hits == [], f"canary found in {hits}"
        states: dict[str, int] = {}
        for k in kills:
            for s in k.states.values():
                states[s] = states.get(s, 0) + 1
        return {
            "repro_s": round(repro_s),
            "files_scanned": scanned,
            "canary_hits": 0,
            "judge_requests": len(script.served),
            "judge_faults": script.faults,
            "judge_answers": script.delivered,
            "judge_distinct_answers_cached": cache,
            "judge_repaid_after_kills": script.delivered - len(set(prompts)),
            "kills": len(kills),
            "landed": sum(k.landed for k in kills),
            "stages_killed": len({k.stage for k in kills}),
            "resumed_equal": sum(k.resumed_equal for k in kills),
            "resumed_from_checkpoint": sum(k.resumed_from_checkpoint for k in kills),
            "stale_lock_warnings": sum(k.stale_lock_warning for k in kills),
            "dvc_lock_cut": sum(k.lock_state == "cut" for k in kills),
            "output_states_after_kill": states,
            "leftover_tmp_files": sorted({f for k in kills for f in k.leftover_tmp}),
            "per_kill": [
                {
                    "stage": k.stage,
                    "seed": k.seed,
                    "delay_s": k.delay_s,
                    "landed": k.landed,
                    "states": sorted(set(k.states.values())),
                    "status_changed": k.status_changed,
                    "resumed_equal": k.resumed_equal,
                    "dvc_lock": k.lock_state,
                    "from_checkpoint": k.resumed_from_checkpoint,
                }
                for k in kills
            ],
        }
    finally:
        K.EXTRA_ENV.clear()
        api.close()


def render(r: dict) -> str:
    s, f, b, p = r["schema"], r["faults"], r["sandbox"], r["pipeline"]
    lost = f["lost"] + (p["kills"] - p["resumed_equal"])
    lines = [
        "# Reliability report",
        "",
        f"Generated by `{r['command']}` on {r['date']} ({r['machine']}, {r['seconds']:.0f} s).",
        "Every check below raises on failure, so this file exists only if all of them held.",
        "",
        "| what | count |",
        "|---|---|",
        f"| bad Parquet inputs tried (stage × input × drift) | {s['tried']} |",
        f"| … refused naming column, file and producing stage, no output written | {s['refused_naming_column_file_stage']} |",
        f"| judge questions under random API faults (~30%) | {f['questions']} in {f['fault_runs']} runs |",
        f"| API faults injected (judge, in-process + outage + killed runs + pipeline) | {f['faults'] + f['outage_faults'] + f['judge_kill_faults'] + p['judge_faults']} |",
        f"| judge subprocess SIGKILLs survived (resumed from cache) | {f['judge_kills']} |",
        f"| `dvc repro <stage>` SIGKILLs survived | {p['kills']} over {p['stages_killed']} stages |",
        f"| … of which landed while dvc was still running | {p['landed']} |",
        f"| … resumed to outputs identical to an uninterrupted run | {p['resumed_equal']} |",
        f"| … of which training resumed from its checkpoint | {p['resumed_from_checkpoint']} |",
        f"| hostile code samples run (escapes) | {b['hostile_samples']} ({b['escapes']}) |",
        f"| files scanned for the canary API key (hits) | {p['files_scanned']} ({p['canary_hits']}) |",
        f"| **items lost** | **{lost}** |",
        f"| duplicate judge answers in the cache | {f['duplicates']} |",
        "",
        "## Schema drift",
        "",
        "Each Parquet input of split, train, generate, score, judge and stats, derived from a valid "
        "artefact: every column missing in turn, every column of an incompatible type in turn, one "
        "extra column, the file cut in half. All read through `lib.io.read_parquet`.",
        "",
        "| stage:input | drifts refused |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in s["per_input"].items()),
        "",
        "## Judge under faults",
        "",
        f"- {f['fault_runs']} runs × {f['questions'] // max(1, f['fault_runs'])} questions, "
        f"{f['requests']} HTTP requests, {f['faults']} faults: "
        + ", ".join(f"{k} {v}" for k, v in sorted(f["fault_kinds"].items()))
        + ". Every question answered exactly once (cache files = distinct prompts = answers "
        "delivered), none missing; a rerun makes zero requests and rewrites identical bytes.",
        f"- {f['outage_runs']} outages longer than the retries: the run stops cleanly "
        "(`stopped: api_unavailable`, questions recorded as missing, never guessed), and a rerun "
        "completes every question paying each once.",
        f"- {f['judge_kills']} SIGKILLs of the judge stage process after a random number of "
        f"answers ({f['judge_kill_questions']} questions in all): the rerun reuses the cache; "
        f"answers paid twice: {f['judge_kill_repaid']} (at most the one in flight at the kill); "
        "output identical to an uninterrupted run.",
        "",
        "## Interrupted `dvc repro` (smoke pipeline, canary key set)",
        "",
        f"Full `dvc repro` in {p['repro_s']} s with the judge on a fake API failing 30% of "
        f"calls; then per stage a reference run and {p['kills']} SIGKILLs of the whole process "
        "group at a random delay (train stages also once just after their checkpoint). After each "
        "kill every output was absent, the previous complete version or the complete new one "
        f"(states seen: {p['output_states_after_kill']}); `dvc status` reported the stage changed "
        "whenever an output was not yet the new version; the resumed `dvc repro --no-run-cache` "
        "matched the uninterrupted run's md5s (DVCLive curves compared without wall-clock columns).",
        f"Judge through dvc: {p['judge_requests']} requests, {p['judge_faults']} faults, "
        f"{p['judge_distinct_answers_cached']} distinct answers cached, "
        f"{p['judge_repaid_after_kills']} paid twice (in flight at a kill).",
        f"DVC's `.dvc/tmp/rwlock` left by a killed dvc: DVC checks the PIDs in it and drops dead "
        f"ones itself (warning 'had been killed. Auto removed it from the lock file.', seen after "
        f"{p['stale_lock_warnings']} kills); nothing to clean by hand.",
        f"dvc.lock cut short by a kill inside DVC's own in-place write of it (DVC then refuses "
        f"it: 'dvc.lock validation failed'; put back with `git checkout dvc.lock`): "
        f"{p['dvc_lock_cut']} of {p['kills']} kills.",
        f"Temp files left beside outputs by killed writers (never inside an output; git-ignored "
        f"`*.tmp`): {len(p['leftover_tmp_files'])}"
        + (f" ({', '.join(p['leftover_tmp_files'][:8])})" if p["leftover_tmp_files"] else "")
        + ".",
        "",
        "DVCLive curves are written in place while training runs, so they are the one output that "
        "can be partial at a kill (`partial(live)`); `dvc status` then reports the stage changed "
        "and the resumed run rebuilds them from the checkpoint. A stage with several outputs can "
        "be caught between them (e.g. score: new Parquet, previous metrics JSON); each file is "
        "complete and `dvc status` reports the stage changed. Seed 100 = killed just after the "
        "training checkpoint appeared. 'running' = dvc had not exited when the SIGKILL was sent.",
        "",
        "| stage | seed | kill at (s) | running | states | status changed | resumed equal | from ckpt |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {k['stage']} | {k['seed']} | {k['delay_s']} | {k['landed']} | {', '.join(k['states'])} | "
            f"{k['status_changed']} | {k['resumed_equal']} | {k['from_checkpoint']} |"
            for k in p["per_kill"]
        ),
        "",
        "## Sandbox",
        "",
        f"{b['hostile_samples']} hostile samples through `run_many` beside a good one "
        f"({b['elapsed_s']} s): "
        + ", ".join(f"{k} → {v}" for k, v in b["statuses"].items())
        + ". No file escaped, no connection reached a 127.0.0.1 listener, no fork survived, the "
        "canary env var of the parent was invisible.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-seeds", type=int, default=2, help="random kills per stage")
    ap.add_argument("--fault-seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "RELIABILITY.md")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reliability-") as d:
        tmp = Path(d)
        log("schema drift")
        schema = schema_sweep(tmp / "schema")
        log("judge faults")
        faults = fault_sweep(tmp / "faults", args.fault_seeds)
        log("sandbox")
        (tmp / "sandbox").mkdir()
        sandbox = sandbox_sweep(tmp / "sandbox")
        pipeline = pipeline_sweep(tmp / "pipeline", args.kill_seeds)
    result = {
        "schema": schema,
        "faults": faults,
        "sandbox": sandbox,
        "pipeline": pipeline,
        "command": "python -m tests.reliability.report"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "seconds": time.monotonic() - t0,
    }
    args.out.write_text(render(result), encoding="utf-8")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
