"""Coercion of one emitted JSON value into an :class:`Emitted` event or an :class:`Invalid`.

Wrong types are fixed where the intent is unambiguous; anything else is one ``Invalid``.
Split from ``protocol.emission`` (which finds the blocks) to keep each module readable.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from protocol.codec import SCHEMA_VERSION
from protocol.events import (
    KNOWN_EVENT_TYPES,
    MAX_EXCERPT_CHARS,
    MAX_SUMMARY_CHARS,
    EventLink,
    LinkType,
    Severity,
)
from protocol.terminal import strip_terminal


class Emitted(msgspec.Struct, frozen=True, kw_only=True):
    """One coerced, valid event from the agent, not yet stamped with tenant/host/seq."""

    event_type: str
    summary: str
    tags: list[str] = []
    payload: dict[str, Any] = {}
    severity: Severity = Severity.INFO
    confidence: float | None = None
    operator_action_required: bool = False
    risk_detected: bool = False
    artifact_refs: list[str] = []
    idempotency_key: str | None = None
    dedupe_key: str | None = None
    links: list[EventLink] = []
    attention_candidate: bool = False
    schema_version: int = SCHEMA_VERSION


class Invalid(msgspec.Struct, frozen=True, kw_only=True):
    """One malformed item: becomes exactly one ``validation_error`` event."""

    reason: str  # machine-friendly, e.g. "invalid_json", "missing_field:summary"
    detail: str  # a human sentence
    excerpt: str  # what the agent wrote, at most MAX_EXCERPT_CHARS


Result = Emitted | Invalid


def excerpt(text: str) -> str:
    if len(text) <= MAX_EXCERPT_CHARS:
        return text
    return text[: MAX_EXCERPT_CHARS - 1] + "…"


def invalid_payload(inv: Invalid) -> dict[str, Any]:
    """The payload of the ``validation_error`` event that reports ``inv``."""
    return {"reason": inv.reason, "detail": inv.detail, "excerpt": inv.excerpt}


def coerce(obj: object) -> Emitted | Invalid:
    """One decoded JSON value → one result."""
    return _coerce(obj, [])


def _coerce(obj: object, notes: list[str]) -> Emitted | Invalid:
    if not isinstance(obj, dict):
        return Invalid(
            reason="not_an_object",
            detail=f"expected a JSON object, got {_json_kind(obj)}",
            excerpt=excerpt(_to_json(obj)),
        )
    try:
        return _build(obj, notes)
    except _Bad as exc:
        return Invalid(reason=exc.reason, detail=exc.detail, excerpt=excerpt(_to_json(obj)))


def _json_kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _to_json(value: object) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except ValueError:  # an int too long for Python's int-to-str limit (4300 digits)
        return f"<{_json_kind(value)} too large to show>"


# --- field coercion: wrong types are fixed where the intent is unambiguous -----------------

_FIELDS = frozenset(Emitted.__struct_fields__) - {"attention_candidate"}
_RESERVED_PAYLOAD_KEYS = ("_extra", "_notes")
_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
_SEVERITY_ALIASES = {"warn": Severity.WARNING, "fatal": Severity.CRITICAL}
_ATTENTION = frozenset({Severity.WARNING, Severity.ERROR, Severity.CRITICAL})
MAX_EVENT_TYPE_CHARS = 128


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _build(obj: dict[str, Any], notes: list[str]) -> Emitted:
    event_type = _text("event_type", obj.get("event_type"), numbers=False)
    if event_type is None:
        raise _Bad("missing_field:event_type", "event_type is missing or empty")
    if len(event_type) > MAX_EVENT_TYPE_CHARS:
        raise _Bad("bad_value:event_type", f"event_type is longer than {MAX_EVENT_TYPE_CHARS}")
    summary = _text("summary", obj.get("summary"), numbers=True)
    if summary is None:
        raise _Bad("missing_field:summary", "summary is missing or empty")
    if len(summary) > MAX_SUMMARY_CHARS:
        notes.append(f"summary truncated from {len(summary)} characters")
        summary = summary[: MAX_SUMMARY_CHARS - 1] + "…"
    severity = _severity(obj.get("severity"), notes)
    action = _bool("operator_action_required", obj.get("operator_action_required"))
    risk = _bool("risk_detected", obj.get("risk_detected"))
    emitted = Emitted(
        event_type=event_type,
        summary=summary,
        tags=_str_list("tags", obj.get("tags")),
        severity=severity,
        confidence=_confidence(obj.get("confidence"), notes),
        operator_action_required=action,
        risk_detected=risk,
        artifact_refs=_str_list("artifact_refs", obj.get("artifact_refs")),
        idempotency_key=_text("idempotency_key", obj.get("idempotency_key"), numbers=True),
        dedupe_key=_text("dedupe_key", obj.get("dedupe_key"), numbers=True),
        links=_links(obj.get("links"), notes),
        schema_version=_schema_version(obj.get("schema_version")),
        attention_candidate=event_type in KNOWN_EVENT_TYPES
        and (action or risk or severity in _ATTENTION),
    )
    extra = {k: v for k, v in obj.items() if k not in _FIELDS}
    payload = _payload(obj.get("payload"), notes)  # last: it receives the notes
    if extra:
        payload["_extra"] = extra
    if notes:
        payload["_notes"] = notes
    return msgspec.structs.replace(emitted, payload=payload)


def _text(field: str, value: object, *, numbers: bool) -> str | None:
    """A string field; None when absent or blank. Escapes are stripped: operators' terminals
    will print it."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and numbers:
        value = _to_json(value)
    if not isinstance(value, str):
        raise _Bad(f"bad_type:{field}", f"{field} must be a string, not {_json_kind(value)}")
    return strip_terminal(value).strip() or None


def _str_list(field: str, value: object) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]  # a lone tag means [tag]
    out: dict[str, None] = {}  # ordered and without duplicates
    for item in items:
        text = _text(field, item, numbers=True)
        if text is not None:
            out[text] = None
    return list(out)


def _bool(field: str, value: object) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise _Bad(f"bad_type:{field}", f"{field} must be a boolean, not {_to_json(value)[:40]}")


def _severity(value: object, notes: list[str]) -> Severity:
    if value is None:
        return Severity.INFO
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _SEVERITY_ALIASES:
            return _SEVERITY_ALIASES[key]
        try:
            return Severity(key)
        except ValueError:
            pass
    notes.append(f"unknown severity {_to_json(value)[:40]} recorded as info")
    return Severity.INFO


def _confidence(value: object, notes: list[str]) -> float | None:
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e300 else math.inf
    elif isinstance(value, str):
        text = value.strip()
        scale = 100.0 if text.endswith("%") else 1.0
        try:
            number = float(text.removesuffix("%")) / scale
        except ValueError:
            number = None
    if number is None:
        raise _Bad("bad_type:confidence", f"confidence must be a number, not {_json_kind(value)}")
    if not math.isfinite(number):
        raise _Bad("bad_value:confidence", "confidence must be a finite number in [0, 1]")
    if not 0.0 <= number <= 1.0:
        notes.append(f"confidence {number:g} clamped to [0, 1]")
        number = min(1.0, max(0.0, number))
    return number


def _links(value: object, notes: list[str]) -> list[EventLink]:
    # A bad link loses only itself: the event it rides on is still worth having.
    if value is None:
        return []
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        notes.append(f"links dropped: expected an array, got {_json_kind(value)}")
        return []
    links: list[EventLink] = []
    for i, item in enumerate(items):
        kind = item.get("type") if isinstance(item, dict) else None
        target = item.get("target") if isinstance(item, dict) else None
        if isinstance(target, int) and not isinstance(target, bool):
            target = str(target)
        try:
            link_type = LinkType(kind.strip().lower()) if isinstance(kind, str) else None
        except ValueError:
            link_type = None
        if link_type is None or not isinstance(target, str) or not target.strip():
            notes.append(
                f"link {i} dropped: needs a known type and a target, got {_to_json(item)[:80]}"
            )
            continue
        links.append(EventLink(type=link_type, target=target.strip()))
    return links


def _schema_version(value: object) -> int:
    if value is None:
        return SCHEMA_VERSION
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 9:  # int() takes other digits too
        value = int(text)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad("bad_type:schema_version", "schema_version must be an integer")
    if value < 1:
        raise _Bad("bad_value:schema_version", "schema_version must be 1 or more")
    return value


def _payload(value: object, notes: list[str]) -> dict[str, Any]:
    if value is None:
        payload: dict[str, Any] = {}
    elif isinstance(value, dict):
        payload = dict(value)
    else:
        notes.append(f"payload was {_json_kind(value)}, kept under _value")
        payload = {"_value": value}
    for key in _RESERVED_PAYLOAD_KEYS:  # these belong to agentfleet; keep the agent's copy
        if key in payload:
            payload["_agent" + key] = payload.pop(key)
    return payload
