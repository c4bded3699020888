"""Config dataclasses <-> dicts, JSON/YAML files and ``key=value`` command-line overrides.

Nested dataclasses are supported; unknown keys and wrongly typed values are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _check_type(key: str, value, annotation):
    """Light type check/coercion of one value against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        candidates = [arg for arg in args if arg is not type(None)]
        for arg in candidates:
            try:
                return _check_type(key, value, arg)
            except (TypeError, ValueError):
                if len(candidates) == 1:  # X | None: X's own message says what is wrong
                    raise
        raise TypeError(f"config key {key!r}: {value!r} does not match {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise TypeError(f"config key {key!r}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if annotation is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            raise TypeError(f"config key {key!r}: expected a number, got {value!r}") from None
    if annotation in (int, float, str, bool) and not (isinstance(value, annotation) and
                                                      (annotation is bool or not isinstance(value, bool))):
        raise TypeError(f"config key {key!r}: expected {annotation.__name__}, got {value!r}")
    if origin in (list, dict) and not isinstance(value, origin):
        raise TypeError(f"config key {key!r}: expected a {origin.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys or bad types raise, naming the key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(prefix + f for f in fields)}")
    return cls(**{k: _check_type(prefix + k, v, hints[k]) for k, v in data.items()})


def load_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML or JSON config file (by suffix; YAML otherwise, which also parses JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``a.b.c=value`` overrides (values parsed as YAML scalars: 1e-4, true, [1, 2])."""
    data = json.loads(json.dumps(data))  # deep copy
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value (e.g. joint.lr=1e-4)")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data


def save(obj, path: str | Path) -> None:
    """Writes a dataclass as JSON (``.json``) or YAML (any other suffix)."""
    path = Path(path)
    data = to_dict(obj)
    path.write_text(json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False))
