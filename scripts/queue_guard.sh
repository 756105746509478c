#!/usr/bin/env bash
# Sourced before `dvc exp run --queue` (scripts/sweep.sh QUEUE=1, bench/gpu_queue.sh): queued
# experiments start from HEAD plus the changes to tracked files, so an untracked source file would
# never reach them. SNAPSHOT=1 commits the working tree first (a lent GPU machine's copy, whose .git
# may be older than its files); otherwise untracked sources stop the run, named.
# It also defines `queue_run`, which starts the workers and waits for the queue to drain.
git_() { git -c user.name=polychromic -c user.email=bench@localhost "$@"; }
if [[ ! -d .git ]]; then  # a copy of the tree without git: DVC experiments are git commits
  git_ init -q
  mkdir -p .git/info  # git without its templates makes no info/
  printf '/.whl/\n/.gpu/\n/site/\n/tok/\n' >>.git/info/exclude
  git_ add -A
  git_ commit -qm "snapshot of the working tree (scripts/queue_guard.sh)"
fi
if [[ ${SNAPSHOT:-0} == 1 ]] && [[ -n $(git status --porcelain) ]]; then
  git_ add -A
  git_ commit -qm "snapshot of the working tree (SNAPSHOT=1)"
fi
untracked=$(git ls-files --others --exclude-standard -- lib stages scripts configs bench)
if [[ -n $untracked ]]; then
  echo "queue: untracked files would not reach the queued experiments (git add them, or" \
    "SNAPSHOT=1): $untracked" >&2
  exit 2
fi

# queue_run JOBS POLL: `dvc queue start -j JOBS`, wait (polling every POLL seconds) until nothing is
# queued or running, then stop the idle workers. The status is read whole: `grep -q` on a pipe
# would end it early under pipefail.
queue_run() {
  dvc queue start -j "$1" >/dev/null
  sleep 2  # workers detach; give them a moment to take their tasks
  while st=$(dvc queue status 2>/dev/null) && grep -qE 'Queued|Running' <<<"$st"; do sleep "$2"; done
  dvc queue stop >/dev/null 2>&1 || true
}
