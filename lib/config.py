"""Typed, frozen views of params.yaml sections.

Every stage reads only the sections dvc.yaml declares for it, through `load_section`, so a typo in
params.yaml (an unknown key) fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml section is missing, has unknown keys, or has a value of the wrong type."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (tuple,):
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, typing.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        # A frozen mapping keeps the dataclass hashable-in-spirit and read-only.
        return types.MappingProxyType(
            {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
        )
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise ParamsError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    # params.yaml uses `lambda` (a Python keyword) for λ; dataclasses spell it `lambda_`.
    data = {("lambda_" if k == "lambda" else k): v for k, v in data.items()}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{path}: required key is missing")
    return cls(**kwargs)


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    return data


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    """Read `section` of params.yaml into the frozen dataclass `cls`."""
    data = read_params(path)
    if section not in data:
        raise ParamsError(f"{path}: section '{section}' is missing")
    return from_dict(cls, data[section] or {}, section)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
