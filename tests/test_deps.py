"""dvc.yaml's code deps are exactly what each stage imports (scripts/deps.py), so no edit goes unrerun.

The `dvc status` side (touching a module marks exactly the stages that import it) is in
tests/test_pipeline.py, on the smoke pipeline it already runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from scripts import deps

ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))


def test_walker_follows_lazy_relative_and_submodule_imports(tmp_path):
    # By hand: s imports lib.a (top), lib.pkg.sub (inside a function) and lib.typed only for type
    # checkers. Importing lib.pkg.sub runs lib/__init__, lib/pkg/__init__ (which imports .helper)
    # and sub. lib.unused is never imported. Every module of lib/pkg is in, so lib/pkg is one dep.
    _write(
        tmp_path,
        {
            "stages/__init__.py": "",
            "stages/s.py": """
                from typing import TYPE_CHECKING
                from lib import a
                if TYPE_CHECKING:
                    from lib import typed
                def f():
                    from lib.pkg import sub
            """,
            "lib/__init__.py": "",
            "lib/a.py": "import os\n",
            "lib/typed.py": "",
            "lib/unused.py": "",
            "lib/pkg/__init__.py": "from .helper import x\n",
            "lib/pkg/helper.py": "x = 1\n",
            "lib/pkg/sub.py": "from ..a import *\n",
        },
    )
    closure = deps.import_closure("stages.s", tmp_path)
    assert {p.as_posix() for p in closure} == {
        "stages/__init__.py",
        "stages/s.py",
        "lib/__init__.py",
        "lib/a.py",
        "lib/pkg/__init__.py",
        "lib/pkg/helper.py",
        "lib/pkg/sub.py",
    }
    assert deps.collapse(closure, tmp_path) == [
        "lib/__init__.py",
        "lib/a.py",
        "lib/pkg",
        "stages/__init__.py",
        "stages/s.py",
    ]
    # One module of the package left out: the folder is no longer exact, so files are listed.
    (tmp_path / "lib/pkg/extra.py").write_text("")
    assert "lib/pkg" not in deps.collapse(closure, tmp_path)


def test_check_names_a_missing_and_an_extra_dep(tmp_path):
    spec = (ROOT / "dvc.yaml").read_text()
    listed = yaml.safe_load(spec)["stages"]["train_baseline"]["deps"]
    assert "lib/packing.py" in listed and "lib/figures.py" not in listed
    planted = [d for d in listed if d != "lib/packing.py"] + ["lib/figures.py"]
    (tmp_path / "dvc.yaml").write_text(deps.rewrite(spec, {"train_baseline": planted}))
    problems = deps.drift(tmp_path / "dvc.yaml")
    assert problems == [
        "train_baseline: missing ['lib/packing.py'], not imported ['lib/figures.py']"
    ]
    deps.main(["--dvc-yaml", str(tmp_path / "dvc.yaml")])  # the rewrite repairs it
    assert (tmp_path / "dvc.yaml").read_text() == spec


def test_dvc_yaml_code_deps_are_the_import_graph():
    problems = deps.drift()
    assert not problems, "stale deps; run `python scripts/deps.py`:\n" + "\n".join(problems)


_PROBE = """
import json, sys
from pathlib import Path
root = Path.cwd()
out = {}
for module in sys.argv[1:]:
    for name in [m for m in sys.modules if m.split('.')[0] in ('lib', 'stages')]:
        del sys.modules[name]
    __import__(module)
    files = set()
    for m in list(sys.modules.values()):
        f = getattr(m, '__file__', None)
        if f and Path(f).resolve().is_relative_to(root) and m.__name__.split('.')[0] in ('lib', 'stages'):
            files.add(Path(f).resolve().relative_to(root).as_posix())
    out[module] = sorted(files)
print(json.dumps(out))
"""


def test_every_module_a_stage_actually_imports_is_a_dep():
    """Independent of the ast walk: import each stage's module for real and read `sys.modules`.
    (Module-level imports only; the lazy ones are the walker's job, tested above.)"""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    modules = {}
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        if (m := deps.stage_module(body["cmd"])) is not None:
            modules[name] = (m, body["deps"])
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *sorted({m for m, _ in modules.values()})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = json.loads(r.stdout)
    for name, (module, declared) in modules.items():
        for f in loaded[module]:
            assert any(f == d or f.startswith(d.rstrip("/") + "/") for d in declared), (
                f"stage {name} imports {f} but dvc.yaml does not list it"
            )


def test_check_params_depends_on_every_section_class_module():
    """Bug caught: check_params imports the section classes by name (lib.config.SECTIONS through
    importlib), which the AST walk cannot see; without the hook an edit to lib/train/params.py
    would not rerun it."""
    from lib.config import SECTIONS

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    want = deps.expected_deps(spec)["check_params"]
    for target in SECTIONS.values():
        f = deps.module_path(target.partition(":")[0]).as_posix()
        assert any(f == d or f.startswith(d + "/") for d in want), f"check_params misses {f}"
    assert "lib/train" in want and "lib/judge" in want
