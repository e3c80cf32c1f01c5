"""A roster session's `env_file`: systemd's EnvironmentFile format, so the file a unit already
reads (the seed's `MOSAIC_AGENT_NAME=…`) can be handed to the session as it is.

The format, as systemd reads it: `KEY=VALUE` lines; blank lines and lines starting with `#`
or `;` are ignored; whitespace around the key and around an unquoted value is dropped; a
value in single quotes is literal, in double quotes `\\"`, `\\\\`, `\\$` and `` \\` `` are
escapes; a backslash at the end of a line continues the value on the next. One leniency: a
leading `export ` is dropped (shell-style .env files). A line that is not an assignment, or
whose key is not a variable name, is skipped with a warning naming the line, like systemd.
A path starting with `-` may be missing (systemd's `EnvironmentFile=-…`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DQ_ESCAPES = '"\\`$'


class EnvFileError(ValueError):
    """An env_file that cannot be read; the message names it, in one line."""


def optional_path(spec: str) -> tuple[Path, bool]:
    """The file's path and whether it may be missing (a leading "-")."""
    optional = spec.startswith("-")
    return Path(spec.removeprefix("-")).expanduser(), optional


def read_env_file(spec: str) -> dict[str, str]:
    """The variables of ``spec`` ({} for an optional file that is not there)."""
    path, optional = optional_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if optional:
            return {}
        raise EnvFileError(f"env_file {path}: no such file") from None
    except OSError as exc:
        raise EnvFileError(f"env_file {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise EnvFileError(f"env_file {path}: not UTF-8 text ({exc.reason})") from None
    values, problems = parse_env(text)
    for problem in problems:
        log.warning("env_file %s: %s", path, problem)
    return values


def parse_env(text: str) -> tuple[dict[str, str], list[str]]:
    """(variables, one sentence per skipped line)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line[0] in "#;":
            continue
        key, eq, rest = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not eq or not _KEY.match(key):
            problems.append(f"line {number}: not KEY=VALUE, skipped")
            continue
        value, i, ok = _value(rest.lstrip(), lines, i)
        if not ok:
            problems.append(f"line {number}: unterminated quote, skipped")
            continue
        values[key] = value
    return values, problems


def _value(rest: str, lines: list[str], i: int) -> tuple[str, int, bool]:
    """The value starting at ``rest`` (which may continue on lines[i:]), the next line's
    index, and False if a quote never closed."""
    out: list[str] = []
    quote = rest[0] if rest[:1] in ("'", '"') else ""
    text = rest[1:] if quote else rest
    while True:
        j = 0
        while j < len(text):
            c = text[j]
            if quote and c == quote:
                return "".join(out), i, True  # anything after the closing quote is ignored
            if c == "\\" and quote != "'":
                if j + 1 == len(text):  # continuation: the value goes on, newline dropped
                    break
                nxt = text[j + 1]
                if quote and nxt not in _DQ_ESCAPES:
                    out.append(c)
                out.append(nxt)
                j += 2
                continue
            out.append(c)
            j += 1
        else:
            if not quote:
                return "".join(out).rstrip(), i, True
            out.append("\n")  # a quoted value spans lines
        if i >= len(lines):
            return "".join(out), i, not quote
        text, i = (lines[i] if quote else lines[i].lstrip()), i + 1
