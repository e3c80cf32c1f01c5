"""Loading a daemon's TOML config into its typed struct, and the one error both raise.

A key the struct does not have is an error naming it and the closest valid key (a typo like
`rutnime` must not fall back to a default silently); the check walks the struct's types, so
nested tables and lists of tables are checked too.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec import inspect

S = TypeVar("S")


class ConfigError(ValueError):
    """A config that cannot be used; the message says which file and why, in one line."""


def load_toml(path: Path, type: type[S], validate: Callable[[S], S]) -> S:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config {path}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = unknown_key(raw, type)
    if unknown is not None:
        raise ConfigError(f"{path}: {unknown}")
    try:
        config = msgspec.convert(raw, type)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def unknown_key(raw: object, type: Any) -> str | None:
    """A sentence naming the first key of ``raw`` that ``type`` has no field for, else None."""
    return _walk(raw, inspect.type_info(type), "")


def _walk(raw: object, info: inspect.Type, where: str) -> str | None:
    if isinstance(info, inspect.StructType) and isinstance(raw, dict):
        fields = {f.encode_name: f for f in info.fields}
        for key, value in raw.items():
            field = fields.get(key)
            if field is None:
                return _unknown(f"{where}{key}", key, list(fields))
            found = _walk(value, field.type, f"{where}{key}.")
            if found is not None:
                return found
    elif isinstance(info, inspect.ListType | inspect.SetType) and isinstance(raw, list):
        for i, item in enumerate(raw):
            found = _walk(item, info.item_type, f"{where.removesuffix('.')}[{i}].")
            if found is not None:
                return found
    elif isinstance(info, inspect.DictType) and isinstance(raw, dict):
        for key, value in raw.items():
            found = _walk(value, info.value_type, f"{where}{key}.")
            if found is not None:
                return found
    elif isinstance(info, inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, inspect.StructType)]
        if len(structs) == 1:  # Optional[Struct]; tagged unions are checked by msgspec
            return _walk(raw, structs[0], where)
    return None


def _unknown(path: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {path!r} (did you mean {close[0]!r}?)"
    return f"unknown key {path!r} (known: {', '.join(sorted(known))})"


def in_range(name: str, value: float, low: float, high: float) -> None:
    """Refuse a number outside [low, high]: 0 for an interval busy-loops, negative is nonsense."""
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
