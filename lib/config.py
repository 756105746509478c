"""Typed, frozen, validated views of params.yaml sections.

params.yaml is the only place a value is set: every key of a section must be there (a missing one
fails and names the file and the key), an unknown one fails, and each value is checked against the
range declared next to its field (`param(ge=..., ...)`), so each knob has one home. Every error is
one line: the file, the key, the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import keyword
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml section is missing, has unknown or missing keys, or a value out of range."""


# Every params.yaml section and the dataclass that reads it ("module:Class", imported on demand so
# this module stays light). `stages.check_params` validates them all before any other stage runs.
SECTIONS: dict[str, str] = {
    "model": "lib.models:ModelParams",
    "data": "lib.data:DataParams",
    "split": "lib.split:SplitParams",
    "lora": "lib.train.params:LoraParams",
    "train": "lib.train.params:TrainParams",
    "loss": "lib.train.params:LossParams",
    "gem": "lib.train.params:GemParams",
    "generate": "lib.generate:GenerateParams",
    "prompts": "lib.prompts:PromptParams",
    "score": "lib.scoring:ScoreParams",
    "judge": "lib.judge.params:JudgeParams",
    "stats": "lib.stats:StatsParams",
    "plot": "lib.figures:PlotParams",
}


@dataclass(frozen=True)
class Range:
    """What a value (or, for a list/mapping field, each element) must satisfy."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    pattern: str | None = None  # strings: re.fullmatch
    doc: str | None = None  # how `pattern` reads in an error

    def problem(self, v: Any) -> str | None:
        if self.pattern is not None:
            if not isinstance(v, str) or not re.fullmatch(self.pattern, v):
                return f"accepted: {self.doc or self.pattern}"
            return None
        if not isinstance(v, int | float) or isinstance(v, bool):
            return None
        if isinstance(v, float) and math.isnan(v):
            return f"accepted: {self.describe()}"
        ok = (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )
        return None if ok else f"accepted: {self.describe()}"

    def describe(self) -> str:
        lo = (
            f"{self.ge} <= "
            if self.ge is not None
            else f"{self.gt} < "
            if self.gt is not None
            else ""
        )
        hi = (
            f" <= {self.le}"
            if self.le is not None
            else f" < {self.lt}"
            if self.lt is not None
            else ""
        )
        if lo and not hi:  # "x >= 1" reads better than "1 <= x"
            return "x " + {"<=": ">=", "<": ">"}[lo.split()[1]] + " " + lo.split()[0]
        return f"{lo}x{hi}"


def param(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    pattern: str | None = None,
    doc: str | None = None,
) -> Any:
    """A params field with no default (params.yaml sets it) and its accepted range."""
    return dataclasses.field(metadata={"range": Range(ge, gt, le, lt, pattern, doc)})


def fail(file: str | Path | None, key: str, value: Any, accepted: str) -> ParamsError:
    prefix = f"{file}: " if file else ""
    return ParamsError(f"{prefix}{key} = {value!r}: {accepted}")


def yaml_key(f: dataclasses.Field) -> str:
    """The key in params.yaml: `lambda_` (a Python keyword + '_') reads `lambda`, nothing else."""
    if f.name.endswith("_") and keyword.iskeyword(f.name[:-1]):
        return f.name[:-1]
    return f.name


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _coerce(value: Any, tp: Any, key: str, file: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, file)
            except ParamsError:
                pass
        names = [
            " | ".join(map(repr, typing.get_args(a)))
            if typing.get_origin(a) is typing.Literal
            else getattr(a, "__name__", str(a)).replace("NoneType", "null")
            for a in args
        ]
        raise fail(file, key, value, f"accepted: {' | '.join(names)}")
    if origin is typing.Literal:
        if value not in args:
            raise fail(file, key, value, f"accepted: {' | '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(file, key, value, "expected a mapping")
        return from_dict(tp, value, key, file)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise fail(file, key, value, "expected a list")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]", file) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise fail(file, key, value, "expected a mapping")
        kt, vt = args if args else (Any, Any)
        # A read-only mapping: params are frozen.
        return types.MappingProxyType(
            {
                _coerce(k, kt, key, file): _coerce(v, vt, f"{key}.{k}", file)
                for k, v in value.items()
            }
        )
    if tp is float:
        # YAML 1.1 reads `2e-4` (no dot) as a string; a number is what was meant.
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(file, key, value, "expected a number (e.g. 0.0002, 2.0e-4 or 2e-4)")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(file, key, value, "expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(file, key, value, "expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise fail(file, key, value, "expected a string")
        return value
    return value


def _check_range(value: Any, rng: Range, key: str, file: Any) -> None:
    if value is None:
        return
    if isinstance(value, tuple):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, Mapping):
        items = [(f"{key}.{k}", v) for k, v in value.items()]
    else:
        items = [(key, value)]
    for k, v in items:
        problem = rng.problem(v)
        if problem:
            raise fail(file, k, v, problem)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", file: Any = None) -> T:
    """Build dataclass `cls` from `data`: every key required, none unknown, each in its range.

    Relations between keys are checked by `cls.__post_init__`, which raises ParamsError starting
    with a key of the section ("min_x = 3 > max_x = 2: ..."); the file and section are added here.
    """
    fields = {yaml_key(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    name = where or cls.__name__
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise fail(
            file,
            f"{where}.{key}" if where else key,
            data[key],
            f"unknown key ({hint}known: {', '.join(sorted(fields))})",
        )
    kwargs = {}
    for key, f in fields.items():
        path = f"{where}.{key}" if where else key
        if key not in data:
            raise ParamsError(
                f"{f'{file}: ' if file else ''}{path} is missing "
                f"(every key is set in params.yaml; none has a default in code)"
            )
        value = _coerce(data[key], hints[f.name], path, file)
        rng = f.metadata.get("range")
        if rng is not None:
            _check_range(value, rng, path, file)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ParamsError as e:
        msg = str(e) if str(e).startswith(f"{name}.") else f"{name}.{e}"
        raise ParamsError(f"{f'{file}: ' if file else ''}{msg}") from None


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    return data


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    """Read `section` of params.yaml into the frozen dataclass `cls`, validated."""
    data = read_params(path)
    if section not in data:
        raise ParamsError(f"{path}: section '{section}' is missing")
    body = data[section]
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise fail(path, section, body, "expected a mapping")
    return from_dict(cls, body, section, path)


# The top-level scalars, checked like a section.
@dataclass(frozen=True)
class TopParams:
    seed: int = param(ge=0)
    eval_split: typing.Literal["test", "val"] = param()
    launcher: str = param(
        pattern=r"(python|accelerate|torchrun)\b.*", doc="python | accelerate ... | torchrun ..."
    )


def load_top(path: str | Path = "params.yaml") -> TopParams:
    data = read_params(path)
    top = [f.name for f in dataclasses.fields(TopParams)]
    unknown = sorted(set(data) - set(SECTIONS) - set(top))
    if unknown:
        raise ParamsError(
            f"{path}: unknown top-level key(s) {unknown}; known: {sorted([*top, *SECTIONS])}"
        )
    return from_dict(TopParams, {k: v for k, v in data.items() if k in top}, "", path)


def load_seed(path: str | Path = "params.yaml") -> int:
    """The top-level `seed`, checked (every stage that draws random numbers reads it)."""
    seed = read_params(path).get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise fail(path, "seed", seed, "expected an integer >= 0")
    return seed


def section_class(section: str) -> type:
    module, _, name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def validate_all(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Every section of `path` into its dataclass: the check that runs before any stage works."""
    data = read_params(path)
    missing = [s for s in SECTIONS if s not in data]
    if missing:
        raise ParamsError(f"{path}: section(s) {missing} missing")
    out: dict[str, Any] = {"": load_top(path)}
    for section in SECTIONS:
        out[section] = load_section(section_class(section), section, path)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def merged_params(overrides: dict[str, Any], path: str | Path = REPO_PARAMS) -> dict[str, Any]:
    """The repo's params.yaml with `overrides` deep-merged in: a complete params file for a test."""
    return deep_merge(read_params(path), overrides)


def params_for(section: str, path: str | Path = REPO_PARAMS, **overrides: Any) -> Any:
    """The repo's params.yaml `section` with `overrides` applied (for tests and benches).

    Code never carries its own defaults; a test that wants "the defaults but max_pairs=10" asks
    for exactly that, and so follows params.yaml when it changes.
    """
    data = read_params(path)
    body = dict(data[section] or {})
    keyed = {("lambda" if k == "lambda_" else k): v for k, v in overrides.items()}
    body.update(keyed)
    return from_dict(section_class(section), body, section, path)
