"""The emission contract: structured events an agent prints between two sentinel lines.

    <!--FLEET_EVENTS_BEGIN-->
    {"event_type": "run.completed", "summary": "tests pass", "severity": "info"}
    <!--FLEET_EVENTS_END-->

The body is one JSON object or an array of them. The host agent feeds the pane's raw output
to an :class:`EmissionParser`, which yields one result per emitted item: an :class:`Emitted`
(coerced, valid) or an :class:`Invalid` (becomes one ``validation_error`` event). Nothing an
agent emits disappears silently, and nothing malformed yields more than one error.
"""

# Long on purpose: one contract read top to bottom: block decoder, streaming parser, events.
from __future__ import annotations

import json
import math

import msgspec

from protocol.emission_coerce import (
    MAX_EVENT_TYPE_CHARS,
    Emitted,
    Invalid,
    Result,
    _coerce,
    _json_kind,
    _to_json,
    coerce,
    excerpt,
    invalid_payload,
)
from protocol.events import MAX_SUMMARY_CHARS, Event, Severity, SourceKind
from protocol.terminal import strip_line, strip_terminal

__all__ = [
    "DEFAULT_BEGIN",
    "DEFAULT_END",
    "MAX_EVENT_TYPE_CHARS",
    "MAX_SENTINEL_LINE_CHARS",
    "EmissionParser",
    "Emitted",
    "Invalid",
    "Result",
    "coerce",
    "excerpt",
    "invalid_payload",
    "parse_block",
    "parse_lines",
    "strip_terminal",
    "to_event",
]

DEFAULT_BEGIN = "<!--FLEET_EVENTS_BEGIN-->"
DEFAULT_END = "<!--FLEET_EVENTS_END-->"

# A longer raw line is never a sentinel, however much escape noise surrounds it; this is
# what bounds the buffer for an unfinished line outside a block.
MAX_SENTINEL_LINE_CHARS = 4096


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


def parse_lines(lines: list[str]) -> list[Result]:
    """A block's body read off a screen, one string per row → results.

    A TUI word-wraps a long JSON line and drops the blank where it broke it, so rows joined
    with newlines (right for JSON printed over several lines) may not decode; rows joined
    with one blank then rebuild the line. The first join that decodes strictly is parsed;
    when none does, the newline join is, so the error and excerpt show the rows as drawn.
    """
    text = "\n".join(lines)
    if _decodes(_unfence(text.strip())):
        return parse_block(text)
    body = lines
    if len(body) > 2 and body[0].startswith("```") and body[-1] == "```":
        body = body[1:-1]
    joined = " ".join(line for line in body if line)
    if _decodes(joined):
        return parse_block(joined)
    return parse_block(text)


def _decodes(text: str) -> bool:
    try:
        msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


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


def to_event(
    result: Result, *, tenant: str, host: str, session: str, boot_id: str, ts: float
) -> Event:
    """A parser result as a draft wire event (seq 0: the host agent's outbox numbers it)."""
    if isinstance(result, Invalid):
        return Event(
            tenant=tenant,
            host=host,
            session=session,
            boot_id=boot_id,
            seq=0,
            ts=ts,
            event_type="validation_error",
            summary=f"malformed emission from {session}: {result.detail}"[:MAX_SUMMARY_CHARS],
            source_kind=SourceKind.SYSTEM,
            severity=Severity.WARNING,
            payload=invalid_payload(result),
            provenance="emission-contract parser",
            tags=["validation_error", result.reason.split(":", 1)[0]],
        )
    assert isinstance(result, Emitted)
    run_id = result.payload.get("run_id")
    return Event(
        tenant=tenant,
        host=host,
        session=session,
        boot_id=boot_id,
        seq=0,
        ts=ts,
        event_type=result.event_type,
        summary=result.summary,
        source_kind=SourceKind.AGENT,
        tags=result.tags,
        payload=result.payload,
        severity=result.severity,
        confidence=result.confidence,
        idempotency_key=result.idempotency_key,
        dedupe_key=result.dedupe_key,
        attention_candidate=result.attention_candidate,
        operator_action_required=result.operator_action_required,
        risk_detected=result.risk_detected,
        artifact_refs=result.artifact_refs,
        run_id=run_id if isinstance(run_id, str) else None,
        links=result.links,
    )
