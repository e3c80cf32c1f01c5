"""Loading a daemon's TOML config into its typed struct, and the one error both raise."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

S = TypeVar("S")


class ConfigError(ValueError):
    """A config that cannot be used; the message says which file and why, in one line."""


def load_toml(path: Path, type: type[S], validate: Callable[[S], S]) -> S:
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        config = msgspec.convert(raw, type)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return validate(config)
