"""Packages cut into parts here (scripts/gpu_pack.sh), carried one a call and joined on the GPU
machine (scripts/gpu_lease.sh stash, unpack): the installed package must be the packed one.

With 1 KiB parts a 20 KiB package makes over ten parts, so a join in the wrong order (p1, p10,
p2 ...) would fail the sha256 check: the part names carry two digits for that.
"""

from __future__ import annotations

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


def _lease(tmp_path: Path, payload: bytes) -> tuple[dict, Path]:
    """Packs a one-wheel folder into 1 KiB parts under tmp_path/g; returns the subprocess kwargs
    (the repo root, an environment with the lease's folders under tmp_path) and the site."""
    src = tmp_path / "src"
    src.mkdir()
    _wheel(src, payload)
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
