"""dvc.yaml's code deps, generated from the import graph: `python scripts/deps.py` rewrites them.

A stage's code deps are exactly the files its module imports, transitively, inside `lib/` and
`stages/`: every `import` statement counts wherever it is (a lazy import in a function still runs
when the stage calls it), except under `if TYPE_CHECKING:`. Importing `lib.a.b` also runs
`lib/__init__.py` and `lib/a/__init__.py`, so those count too. A package folder is listed as one
directory dep when the stage imports every module in it (data files beside the modules are then
covered as well). Other deps (data, models) are kept as written, after the code deps.

    python scripts/deps.py            # rewrite dvc.yaml's deps lines in place
    python scripts/deps.py --check    # exit 1 and print the differences instead (CI, tests)
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("lib", "stages")
_MODULE_IN_CMD = re.compile(r"-m\s+(stages(?:\.\w+)+)")


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """`lib.a.b` -> lib/a/b.py or lib/a/b/__init__.py (relative to root), None outside the project."""
    if name.split(".")[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(root)
    return None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(name: str, root: Path = ROOT) -> set[str]:
    """The project modules that importing `name` runs directly (its own import statements)."""
    path = module_path(name, root)
    if path is None:
        return set()
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse((root / path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import x`: x may be a submodule (imported) or a name (pkg alone).
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            found.update(m for m in _with_parents(t) if module_path(m, root) is not None)
    return found


# Imports by name at run time, which the AST walk cannot see: stages.check_params loads the class
# of every params section through importlib, from lib/config.py's SECTIONS ("module:Class").
DYNAMIC_IMPORTS = {"stages.check_params": ("lib/config.py", "SECTIONS")}


def dynamic_imports(name: str, root: Path = ROOT) -> set[str]:
    """The modules `name` imports by name (DYNAMIC_IMPORTS), read from the dict literal's values."""
    if name not in DYNAMIC_IMPORTS:
        return set()
    rel, var = DYNAMIC_IMPORTS[name]
    for node in ast.parse((root / rel).read_text(), rel).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == var:
            specs = ast.literal_eval(node.value)
            return {m for spec in specs.values() for m in _with_parents(spec.partition(":")[0])}
    raise ValueError(f"{rel}: no module-level {var} (DYNAMIC_IMPORTS of {name})")


def import_closure(name: str, root: Path = ROOT) -> set[Path]:
    """Every project file that running `python -m name` can import (relative paths)."""
    todo, seen = [*_with_parents(name)], set()
    while todo:
        m = todo.pop()
        if m in seen or module_path(m, root) is None:
            continue
        seen.add(m)
        todo.extend((imported_modules(m, root) | dynamic_imports(m, root)) - seen)
    return {p for m in seen if (p := module_path(m, root)) is not None}


def collapse(files: set[Path], root: Path = ROOT) -> list[str]:
    """Sorted deps: a package folder (below the roots) stands for its modules when all are in."""
    out, covered = [], set()
    pkgs = sorted(
        {p.parent for p in files if p.parent.name not in CODE_ROOTS and len(p.parts) > 2},
        key=lambda d: len(d.parts),
    )
    for d in pkgs:
        if any(d.is_relative_to(c) for c in covered):
            continue
        modules = {p.relative_to(root) for p in (root / d).rglob("*.py")}
        if modules and modules <= files:
            covered.add(d)
            out.append(d.as_posix())
    out += [p.as_posix() for p in files if not any(p.is_relative_to(c) for c in covered)]
    return sorted(out)


def stage_module(cmd: str) -> str | None:
    m = _MODULE_IN_CMD.search(cmd)
    return m.group(1) if m else None


def is_code_dep(dep: str) -> bool:
    return dep.split("/")[0] in CODE_ROOTS


def expected_deps(spec: dict, root: Path = ROOT) -> dict[str, list[str]]:
    """Stage name -> its deps list as it should read (code deps generated, others kept)."""
    out = {}
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        module = stage_module(body["cmd"])
        if module is None:
            continue
        others = [d for d in body.get("deps", []) if not is_code_dep(d)]
        out[name] = collapse(import_closure(module, root), root) + others
    return out


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' if "${" in i else i for i in items) + "]"


def rewrite(text: str, expected: dict[str, list[str]]) -> str:
    """dvc.yaml's text with each stage's one-line `deps: [...]` replaced; comments kept."""
    lines, stage = text.splitlines(keepends=True), None
    for i, line in enumerate(lines):
        if m := re.match(r"^  ([\w-]+):\s*$", line):
            stage = m.group(1)
        elif (m := re.match(r"^(\s+)deps: \[.*\]\s*$", line)) and stage in expected:
            lines[i] = f"{m.group(1)}deps: {_flow(expected[stage])}\n"
    return "".join(lines)


def drift(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> list[str]:
    """One line per stage whose code deps differ from its import graph: what is missing, what extra."""
    spec = yaml.safe_load(dvc_yaml.read_text())
    problems = []
    for name, want in expected_deps(spec, root).items():
        have = {d for d in spec["stages"][name].get("do", spec["stages"][name])["deps"]}
        missing = sorted(set(want) - have)
        extra = sorted(d for d in have - set(want) if is_code_dep(d))
        if missing or extra:
            problems.append(f"{name}: missing {missing}, not imported {extra}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--check", action="store_true", help="report drift, change nothing")
    ap.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = ap.parse_args(argv)
    if args.check:
        problems = drift(args.dvc_yaml)
        for p in problems:
            print(f"{args.dvc_yaml.name}: {p}", file=sys.stderr)
        if problems:
            print("fix: python scripts/deps.py", file=sys.stderr)
        return 1 if problems else 0
    spec = yaml.safe_load(args.dvc_yaml.read_text())
    text = rewrite(args.dvc_yaml.read_text(), expected_deps(spec))
    args.dvc_yaml.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
