"""Config dataclasses <-> dicts, JSON/YAML files and ``key=value`` command-line overrides.

Nested dataclasses are supported; unknown keys and wrongly typed values are errors naming the key.
Config files are bounded (:data:`MAX_CONFIG_BYTES`, and :data:`MAX_CONFIG_VALUES` once YAML aliases
are expanded), so a small file cannot expand into gigabytes (a YAML "billion laughs"), and nothing
walks or copies a config before those bounds are checked.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ._utils import parse_json, write_atomic

T = TypeVar("T")

#: Largest config file read. Real configs are a few kilobytes.
MAX_CONFIG_BYTES = 1 << 20
#: Most values (mappings, lists and scalars, each counted) a config or override may hold with its
#: YAML aliases expanded: each alias counts as the whole value it refers to.
MAX_CONFIG_VALUES = 100_000

# libyaml's parser where PyYAML has it (faster); the node graph it composes is checked in Python.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def to_dict(obj) -> dict[str, Any]:
    """A config dataclass as plain nested dicts, lists and scalars (what :func:`save` writes)."""
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
    unknown = sorted(f"{prefix}{k}" for k in set(data) - fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(prefix + f for f in fields)}")
    return cls(**{k: _check_type(prefix + k, v, hints[k]) for k, v in data.items()})


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded_size(root: yaml.Node, where: str) -> None:
    """Counts the values of a composed YAML document as if its aliases were expanded, without
    expanding them: an alias is the same node object as its anchor, so each node's count is
    computed once (iteratively, so deep nesting cannot exhaust the stack). Raises ValueError past
    :data:`MAX_CONFIG_VALUES` or on an alias inside its own anchor."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()  # nodes whose children are being counted: an alias to one is a cycle
    stack = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        key = id(node)
        if children_counted:
            pending.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_CONFIG_VALUES:
                raise ValueError(f"{where} expands to more than {MAX_CONFIG_VALUES} values "
                                 f"(YAML aliases repeat what they refer to); write the values out")
        elif key not in sizes:
            if key in pending:
                raise ValueError(f"{where} refers to a YAML anchor inside itself "
                                 f"(line {node.start_mark.line + 1}); a config cannot be recursive")
            pending.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: PyYAML's own messages span several lines (with a snippet and a caret)."""
    mark = getattr(exc, "problem_mark", None)
    problem = ", ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None))))
    problem = problem or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def parse_yaml(text: str, where: str):
    """``yaml.safe_load`` within the bounds: the document is composed, its size with aliases
    expanded is checked, and only then are Python objects built.

    Args:
        text: the YAML (or JSON) text.
        where: what to name in errors (e.g. ``"config file x.yaml"``).

    Returns:
        The parsed value (None for an empty document).

    Raises:
        ValueError: invalid YAML, more than one document, too large once expanded, recursive or
            nested too deeply; one line naming ``where``.
    """
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ValueError(f"{where} is nested too deeply") from None
    finally:
        loader.dispose()


def load_file(path: str | Path) -> dict[str, Any]:
    """Reads a YAML or JSON config file (by suffix; YAML otherwise, which also parses JSON).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is larger than :data:`MAX_CONFIG_BYTES`, not UTF-8, not valid
            YAML/JSON, too large once its aliases are expanded, or not a mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist or is not a file")
    with path.open("rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; a config is a few kilobytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    if kind == "JSON":
        data = parse_json(text, f"config file {path}")
    else:
        data = parse_yaml(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``a.b.c=value`` overrides (values parsed as YAML scalars: 1e-4, true, [1, 2]).

    ``data`` is not modified: the mappings on each override's path are copied (shallowly), the
    rest is shared with the result.
    """
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value (e.g. joint.lr=1e-4)")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node[part] = node = dict(child)
        node[leaf] = parse_yaml(raw, f"override {key}")
    return data


def save(obj, path: str | Path) -> None:
    """Writes a dataclass as JSON (``.json``) or YAML (any other suffix), atomically: a run rewrites
    its config on every start and resume, and a file cut short would still load, with defaults in
    place of the lost keys."""
    path = Path(path)
    data = to_dict(obj)
    write_atomic(path, json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False))
