"""The controller's events API (fleet.ctl.events.*, fleet.ctl.store.*) and the records it
returns: stored events, their links, and per-boot sequence accounting."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from protocol.codec import Message
from protocol.events import Event, LinkType, Severity, SourceKind

MAX_EVENTS_PER_REPLY = 500

# Ids and counts past SQLite's integer (2^63) answered `internal`; now they do not decode.
EventId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Count = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
# A time: finite, so 1e400 (inf, sent as null) cannot silently mean "no bound".
Time = Annotated[float, msgspec.Meta(ge=-1e12, le=1e12)]


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the events table, with its JSON columns decoded."""

    id: int
    tenant: str
    host: str
    session: str
    boot_id: str
    seq: int
    ts: float
    received_at: float
    event_type: str
    summary: str
    tags: list[str]
    payload: dict[str, Any]
    severity: Severity
    confidence: float | None
    provenance: str | None
    source_kind: SourceKind
    idempotency_key: str
    dedupe_key: str | None
    attention_candidate: bool
    operator_action_required: bool
    risk_detected: bool
    artifact_refs: list[str]
    run_id: str | None


class StoredLink(msgspec.Struct, frozen=True, kw_only=True):
    """A typed edge. ``to_event`` is None while the target (``to_key``) has not arrived."""

    from_event: int
    to_event: int | None
    type: LinkType
    created_by_event: int | None  # None: made by an operator
    created_at: float
    to_key: str | None = None  # set only on pending links


class SeqGap(msgspec.Struct, frozen=True, kw_only=True):
    """Sequence accounting for one host boot; see ``EventStore.gaps`` for the definition."""

    tenant: str
    host: str
    boot_id: str
    min_seq: int
    max_seq: int
    stored: int
    missing: int


def stored_as_event(stored: StoredEvent) -> Event:
    """A stored row as the wire event it was stored from (its links live in the store)."""
    fields = msgspec.structs.asdict(stored)
    return Event(**{name: fields[name] for name in Event.__struct_fields__ if name in fields})


class EventsSearchRequest(Message, frozen=True, tag="events.search.request"):
    query: str | None = None  # FTS5 syntax
    tenant: str | None = None
    host: str | None = None
    session: str | None = None
    event_type: str | None = None
    since: Time | None = None
    until: Time | None = None
    limit: Count = 50
    order: str = "desc"


class EventsTailRequest(Message, frozen=True, tag="events.tail.request"):
    after_id: EventId = 0
    limit: Count = 100
    tenant: str | None = None
    last: EventId | None = None  # start with the last N events instead of after_id (0: 1)


class EventsReply(Message, frozen=True, tag="events.reply"):
    events: list[StoredEvent]
    truncated: bool = False  # more matched than fit in one reply
    last_id: int = 0


class EventShowRequest(Message, frozen=True, tag="events.show.request"):
    id: EventId


class EventShowReply(Message, frozen=True, tag="events.show.reply"):
    event: StoredEvent
    outgoing: list[StoredLink]
    incoming: list[StoredLink]


class EventLinkRequest(Message, frozen=True, tag="events.link.request"):
    from_id: EventId
    to_id: EventId
    type: LinkType


class EventLinkReply(Message, frozen=True, tag="events.link.reply"):
    created: bool


class RebuildRequest(Message, frozen=True, tag="store.rebuild.request"):
    pass


class RebuildReply(Message, frozen=True, tag="store.rebuild.reply"):
    events: int
    stream_messages: int
    took_s: float
