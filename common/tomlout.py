"""A small TOML writer for our own config structs (tomllib reads; the stdlib cannot write)."""

from __future__ import annotations

from typing import Any

import msgspec


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()  # JSON strings are valid TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value) and bool(value)


def dumps(data: dict[str, Any], _prefix: str = "") -> str:
    """Scalars and inline values first, then sub-tables, then arrays of tables."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if value is None:
            continue
        name = f"{_prefix}{_key(key)}"
        if _is_table(value) and key != "env":
            body = dumps(value, f"{name}.")
            tables.append(f"\n[{name}]\n{body}")
        elif isinstance(value, list) and value and all(_is_table(v) for v in value):
            for item in value:
                tables.append(f"\n[[{name}]]\n{dumps(item, f'{name}.')}")
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    return "\n".join(lines).rstrip("\n") + "\n" + "".join(tables) if lines else "".join(tables)


def dump_struct(struct: msgspec.Struct) -> str:
    return dumps(msgspec.to_builtins(struct))
