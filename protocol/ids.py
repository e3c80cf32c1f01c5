"""Validation of the ids that become NATS subject tokens: tenant, host, session.

Every id is validated once, here, with an error that names the offending character
class, so that no caller ever has to guess why a subject could not be built.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

import msgspec

MAX_ID_LENGTH = 64

# Tokens the subject tree gives a meaning of its own: `fleet.ctl.>` is the controller API,
# and names starting with `_` or `$` collide with NATS internals (`_INBOX`, `$JS`, `$SYS`).
RESERVED_TENANTS = frozenset({"ctl"})

_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_ALLOWED = re.compile(_PATTERN)

# For fields of wire messages: the same rule, enforced by msgspec while decoding.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=_PATTERN)]

# For the ids of a message that arrives thousands of times a second: msgspec checks the
# length, and the message's ``__post_init__`` hands all its ids to ``check_ids`` at once.
# msgspec calls the pattern once per field, 0.75 µs each: decoding a heartbeat with 10
# sessions took 18 µs that way and 11 µs this way (docs/benchmarks.md, *Ids checked at once*).
BulkId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_JOINED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\n[A-Za-z0-9][A-Za-z0-9_-]*)*")


class IdError(ValueError):
    """An id cannot be used as a NATS subject token."""

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {kind} id {value!r}: {reason}")


def _describe_bad_char(ch: str) -> str:
    if ch == ".":
        return "contains '.', which separates NATS subject tokens"
    if ch in "*>":
        return f"contains the NATS wildcard {ch!r}"
    if ch.isspace():
        return f"contains whitespace (U+{ord(ch):04X})"
    if unicodedata.category(ch).startswith("C"):
        return f"contains the control character U+{ord(ch):04X}"
    if ch == ":":
        return "contains ':', which separates the parts of message ids and tmux targets"
    if ch == "/":
        return "contains '/', which separates TENANT/HOST/SESSION on the command line"
    return f"contains {ch!r}; allowed are ASCII letters, digits, '_' and '-'"


def validate_id(value: object, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`IdError`."""
    if not isinstance(value, str):
        raise IdError(kind, repr(value), f"must be a string, not {type(value).__name__}")
    if not value:
        raise IdError(kind, value, "is empty")
    if len(value) > MAX_ID_LENGTH:
        raise IdError(kind, value, f"is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    if _ALLOWED.fullmatch(value):
        return value
    for ch in value:
        if not (ch.isascii() and (ch.isalnum() or ch in "_-")):
            raise IdError(kind, value, _describe_bad_char(ch))
    raise IdError(kind, value, "must start with an ASCII letter or digit")


def check_ids(values: list[str], kinds: tuple[str, ...]) -> None:
    """Raise :class:`IdError` for the first of ``values`` that is not a valid id; the i-th
    is named ``kinds[i]``, the ones past the end of ``kinds`` its last. One regex over all
    of them joined by newlines; a value holding a newline of its own changes the count."""
    joined = "\n".join(values)
    if _JOINED.fullmatch(joined) is not None and joined.count("\n") == len(values) - 1:
        return
    last = len(kinds) - 1
    for i, value in enumerate(values):
        validate_id(value, kinds[min(i, last)])


def validate_tenant(value: object) -> str:
    tenant = validate_id(value, "tenant")
    if tenant in RESERVED_TENANTS:
        raise IdError("tenant", tenant, "is reserved for the controller API (fleet.ctl.>)")
    return tenant


def validate_host(value: object) -> str:
    return validate_id(value, "host")


def validate_session(value: object) -> str:
    return validate_id(value, "session")


def host_id_from_hostname(hostname: str) -> str:
    """Derive a valid host id from a machine's hostname (first label, sanitized)."""
    label = hostname.split(".", 1)[0]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", label).strip("-_")[:MAX_ID_LENGTH]
    return cleaned or "host"
