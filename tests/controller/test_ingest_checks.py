"""The per-event checks of ingest, on bytes as they come off the stream: a valid event
passes; a body whose subject or Nats-Msg-Id names another event becomes a validation_error
that says why (and is stored, not dropped)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from controller.events.ingest import Ingest, event_from_message
from controller.events.store.core import EventStore
from controller.events.streams import StreamSettings
from protocol import encode, subjects
from protocol.events import Event, SourceKind


def make(**fields: object) -> Event:
    base: dict[str, object] = dict(
        tenant="acme",
        host="h1",
        session="coder",
        boot_id="b1",
        seq=7,
        ts=1.0,
        event_type="tool_call",
        summary="ran tests",
        source_kind=SourceKind.AGENT,
    )
    return Event(**{**base, **fields})  # type: ignore[arg-type]


def check(subject: str, event: Event, msg_id: str | None) -> Event:
    headers = {"Nats-Msg-Id": msg_id} if msg_id is not None else None
    return event_from_message(subject, encode(event), headers, "FLEET_EVT_acme", 99, 5.0)


def test_a_valid_event_passes_as_it_is() -> None:
    event = make()
    subject = subjects.event("acme", "h1", "coder", "tool_call")
    assert check(subject, event, subjects.msg_id("h1", "b1", 7)) == event
    assert check(subject, event, None) == event  # a message id is not required


@pytest.mark.parametrize(
    ("subject", "msg_id", "complaint"),
    [
        (subjects.event("acme", "h1", "coder", "tool_call"), "h1:b1:8", "Nats-Msg-Id 'h1:b1:8'"),
        (subjects.event("acme", "h1", "coder", "tool_call"), "h1:b2:7", "does not match"),
        (subjects.event("acme", "h2", "coder", "tool_call"), "h1:b1:7", "the subject acme/h2"),
        (subjects.event("acme", "h1", "coder", "note"), "h1:b1:7", "subject type 'note'"),
    ],
)
def test_a_mismatch_becomes_a_validation_error_saying_why(
    subject: str, msg_id: str, complaint: str
) -> None:
    got = check(subject, make(), msg_id)
    assert got.event_type == "validation_error"
    assert got.idempotency_key == "invalid:FLEET_EVT_acme:99"
    assert complaint in got.payload["detail"]
    assert got.ts == 5.0


def test_a_failed_store_write_is_counted_and_retried(tmp_path: Path) -> None:
    """A write that fails (disk full, I/O error) is retried, never skipped, and counted where
    `fleet status` shows it (`store_write_failures`)."""
    store = EventStore(tmp_path / "events.db")
    store.open()
    real = store.insert_many
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky(events: list[Event], received_at: object) -> list[int | None]:
        if failures:
            raise failures.pop()
        return real(events, received_at)  # type: ignore[arg-type]

    store.insert_many = flaky  # type: ignore[method-assign]
    counters: dict[str, int] = {}
    ingest = Ingest(store, ["acme"], StreamSettings(), counters=counters)
    ids = anyio.run(ingest._store_until_done, [make()], [1.0], "acme", anyio.Lock())
    assert ids == [1] and counters == {"store_write_failures": 1}
    store.close()
