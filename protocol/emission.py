"""The emission contract: structured events an agent prints between two sentinel lines.

    <!--FLEET_EVENTS_BEGIN-->
    {"event_type": "run.completed", "summary": "tests pass", "severity": "info"}
    <!--FLEET_EVENTS_END-->

The body is one JSON object or an array of them. The host agent feeds the pane's raw output
to an :class:`EmissionParser`, which yields one result per emitted item: an :class:`Emitted`
(coerced, valid) or an :class:`Invalid` (becomes one ``validation_error`` event). Nothing an
agent emits disappears silently, and nothing malformed yields more than one error.
"""

from __future__ import annotations

import json
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
from protocol.terminal import strip_line, strip_terminal

__all__ = [
    "DEFAULT_BEGIN",
    "DEFAULT_END",
    "MAX_SENTINEL_LINE_CHARS",
    "EmissionParser",
    "Emitted",
    "Invalid",
    "Result",
    "coerce",
    "invalid_payload",
    "parse_block",
    "strip_terminal",
]

DEFAULT_BEGIN = "<!--FLEET_EVENTS_BEGIN-->"
DEFAULT_END = "<!--FLEET_EVENTS_END-->"

# A longer raw line is never a sentinel, however much escape noise surrounds it; this is
# what bounds the buffer for an unfinished line outside a block.
MAX_SENTINEL_LINE_CHARS = 4096


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


def parse_block(body: str) -> list[Result]:
    """The text between the sentinels → one result per item (an array gives one per element)."""
    text = _unfence(body.strip())
    if not text:
        return [Invalid(reason="empty_block", detail="nothing between the sentinels", excerpt="")]
    wrapped = False
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        try:
            # TUIs hard-wrap long lines, which puts raw newlines inside JSON strings; the
            # lenient decoder keeps them rather than losing the whole block.
            value = json.loads(
                text, strict=False, parse_constant=_reject_constant, parse_float=_finite_float
            )
            wrapped = True
        except (ValueError, RecursionError):
            return [Invalid(reason="invalid_json", detail=str(exc), excerpt=excerpt(text))]
    items = value if isinstance(value, list) else [value]
    if not isinstance(value, (list, dict)):
        return [
            Invalid(
                reason="not_an_object",
                detail=f"the block holds {_json_kind(value)}, not an object or array",
                excerpt=excerpt(text),
            )
        ]
    note = ["raw control characters inside JSON strings (terminal line wrap?)"] if wrapped else []
    results: list[Result] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            results.append(_coerce(item, list(note)))
        else:
            results.append(
                Invalid(
                    reason="not_an_object",
                    detail=f"array element {i} is {_json_kind(item)}, not an object",
                    excerpt=excerpt(_to_json(item)),
                )
            )
    return results


class EmissionParser:
    """Incremental parser over a pane's raw output, fed in arbitrary chunks.

    Work is per line and each line is scanned once, so cost is linear in the output. A
    block is bounded in size (UTF-8 bytes of its body lines) and in time since its BEGIN
    line; the bound turns the partial block into one ``Invalid`` and the parser resyncs.
    """

    def __init__(
        self,
        begin: str = DEFAULT_BEGIN,
        end: str = DEFAULT_END,
        *,
        max_block_bytes: int = 256 * 1024,
        max_block_seconds: float = 60.0,
    ) -> None:
        self._begin = begin.strip()
        self._end = end.strip()
        if not self._begin or not self._end or self._begin == self._end:
            raise ValueError("sentinels must be non-empty and different")
        if "\n" in self._begin + self._end or len(self._begin + self._end) > 1024:
            raise ValueError("sentinels must be short single lines")
        self._min_len = min(len(self._begin), len(self._end))
        # Stripping only removes or overwrites characters, so a line lacking one of a
        # sentinel's characters cannot be that sentinel; punctuation first, it is rarer.
        self._needles = [sorted(set(s), key=str.isalnum) for s in (self._begin, self._end)]
        self.max_block_bytes = max_block_bytes
        self.max_block_seconds = max_block_seconds
        self._partial: list[str] = []  # raw pieces of the current, unfinished line
        self._partial_chars = 0
        self._partial_bytes = 0
        self._skip_line = False  # the rest of the current line was cut off by an overflow
        self._lines: list[str] | None = None  # stripped body lines of the open block
        self._block_bytes = 0
        self._opened_at = 0.0

    @property
    def in_block(self) -> bool:
        return self._lines is not None

    def feed(self, chunk: str, now: float) -> list[Result]:
        out: list[Result] = []
        start = 0
        while (nl := chunk.find("\n", start)) >= 0:
            piece = chunk[start:nl]
            start = nl + 1
            if self._skip_line:
                self._skip_line = False
            else:
                if self._partial:
                    piece = "".join(self._partial) + piece
                self._line(piece, now, out)
            self._partial.clear()
            self._partial_chars = self._partial_bytes = 0
        rest = chunk[start:]
        if rest and not self._skip_line:
            self._partial.append(rest)
            self._partial_chars += len(rest)
            self._partial_bytes += len(rest.encode())
            self._bound_partial(out)
        out.extend(self.check_timeout(now))
        return out

    def check_timeout(self, now: float) -> list[Result]:
        if self._lines is None or now - self._opened_at <= self.max_block_seconds:
            return []
        inv = self._abandon(
            "unclosed_timeout",
            f"no end sentinel within {self.max_block_seconds:g} s of the begin sentinel",
        )
        # The unfinished line stays: it may be the start of the next BEGIN.
        return [inv]

    def close(self) -> list[Result]:
        """End of stream (the pane died): finish the last line, report an open block."""
        out: list[Result] = []
        if self._partial and not self._skip_line:
            self._line("".join(self._partial), self._opened_at, out)
        self._partial.clear()
        self._partial_chars = self._partial_bytes = 0
        self._skip_line = False
        if self._lines is not None:
            out.append(self._abandon("unclosed_eof", "the output ended inside a block"))
        return out

    def _classify(self, raw: str) -> str | None:
        if len(raw) > MAX_SENTINEL_LINE_CHARS or len(raw) < self._min_len:
            return None
        if not any(all(c in raw for c in needle) for needle in self._needles):
            return None
        text = strip_line(raw).strip()
        if text == self._begin:
            return "begin"
        if text == self._end:
            return "end"
        return None

    def _line(self, raw: str, now: float, out: list[Result]) -> None:
        kind = self._classify(raw)
        if self._lines is None:
            if kind == "begin":
                self._open(now)
            elif kind == "end":
                out.append(
                    Invalid(
                        reason="stray_end",
                        detail="end sentinel without a begin sentinel",
                        excerpt=excerpt(strip_line(raw).strip()),
                    )
                )
            return
        if kind == "begin":
            out.append(self._abandon("nested_begin", "begin sentinel inside an open block"))
            self._open(now)
        elif kind == "end":
            body = "\n".join(self._lines)
            self._lines = None
            out.extend(parse_block(body))
        else:
            size = len(raw.encode()) + 1
            if self._block_bytes + size > self.max_block_bytes:
                out.append(self._overflow(raw))
            else:
                self._lines.append(strip_line(raw))
                self._block_bytes += size

    def _bound_partial(self, out: list[Result]) -> None:
        # A partial line too long to be a sentinel is judged now, so memory stays bounded:
        # the result is the same as if the whole line had arrived at once.
        if self._partial_chars <= MAX_SENTINEL_LINE_CHARS:
            return
        if self._lines is None:
            self._skip_line = True
        elif self._block_bytes + self._partial_bytes + 1 > self.max_block_bytes:
            out.append(self._overflow("".join(self._partial)))
            self._skip_line = True
        else:
            return
        self._partial.clear()
        self._partial_chars = self._partial_bytes = 0

    def _overflow(self, raw: str) -> Invalid:
        assert self._lines is not None
        # Cut the line where the budget ran out, so the excerpt does not depend on chunking.
        room = max(0, self.max_block_bytes - self._block_bytes - 1)
        self._lines.append(strip_line(raw.encode()[:room].decode(errors="ignore")))
        return self._abandon(
            "oversize", f"block exceeds {self.max_block_bytes} bytes without an end sentinel"
        )

    def _open(self, now: float) -> None:
        self._lines = []
        self._block_bytes = 0
        self._opened_at = now

    def _abandon(self, reason: str, detail: str) -> Invalid:
        text = "\n".join(self._lines or [])
        self._lines = None
        return Invalid(reason=reason, detail=detail, excerpt=excerpt(text))


def _unfence(text: str) -> str:
    # Models like to wrap JSON in a markdown code fence even when told not to.
    if text.startswith("```") and text.endswith("```") and "\n" in text:
        return text[text.index("\n") + 1 : -3].strip()
    return text


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # what msgspec, the strict decoder, refuses too
        raise ValueError(f"number out of range: {text}")
    return number


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
