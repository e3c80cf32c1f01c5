"""The controller's events verbs: search, tail, show, link, rebuild. Reads go to the store in a
worker thread; replies are trimmed to fit one NATS message."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgspec

from controller.events.store.core import EventStore
from controller.events.store.query import StoreQueryError
from protocol.api import ApiError, ErrorCode
from protocol.events import Event
from protocol.events_api import (
    MAX_EVENTS_PER_REPLY,
    EventLinkReply,
    EventLinkRequest,
    EventShowReply,
    EventShowRequest,
    EventsReply,
    EventsSearchRequest,
    EventsTailRequest,
    RebuildReply,
    RebuildRequest,
    StoredEvent,
)

REPLY_BUDGET_BYTES = 768 * 1024  # under the 1 MiB default max_payload, with room for framing

Replayer = Callable[[], Awaitable[tuple[list[Event], list[float]]]]


def fit(events: list[StoredEvent]) -> tuple[list[StoredEvent], bool]:
    """As many events as fit the reply budget, in order; True if some were left out."""
    used = 0
    for i, event in enumerate(events):
        used += len(msgspec.json.encode(event)) + 1
        if used > REPLY_BUDGET_BYTES:
            return events[:i], True
    return events, False


@dataclass
class EventsApi:
    store: EventStore
    replayer: Replayer
    pause: anyio.Lock
    relinker: Callable[[list[Event]], int]

    async def search(self, req: EventsSearchRequest) -> EventsReply | ApiError:
        limit = max(1, min(req.limit, MAX_EVENTS_PER_REPLY))
        try:
            found = await anyio.to_thread.run_sync(
                lambda: self.store.search(
                    req.query,
                    tenant=req.tenant,
                    host=req.host,
                    session=req.session,
                    event_type=req.event_type,
                    since=req.since,
                    until=req.until,
                    limit=limit + 1,
                    order=req.order,
                )
            )
        except StoreQueryError as exc:
            return ApiError(code=ErrorCode.BAD_QUERY, message=str(exc))
        more = len(found) > limit
        events, cut = fit(found[:limit])
        return EventsReply(
            events=events, truncated=more or cut, last_id=events[-1].id if events else 0
        )

    async def tail(self, req: EventsTailRequest) -> EventsReply | ApiError:
        limit = max(1, min(req.limit, MAX_EVENTS_PER_REPLY))
        if req.last is not None:
            last = max(1, min(req.last, limit))
            recent = await anyio.to_thread.run_sync(
                lambda: self.store.search(None, tenant=req.tenant, limit=last)
            )
            events = list(reversed(recent))
        else:
            events = await anyio.to_thread.run_sync(
                lambda: self.store.tail(req.after_id, limit=limit, tenant=req.tenant)
            )
        events, cut = fit(events)
        last = events[-1].id if events else req.after_id
        return EventsReply(events=events, truncated=cut, last_id=last)

    async def show(self, req: EventShowRequest) -> EventShowReply | ApiError:
        event = await anyio.to_thread.run_sync(self.store.get, req.id)
        if event is None:
            return ApiError(code=ErrorCode.NOT_FOUND, message=f"no event with id {req.id}")
        outgoing, incoming = await anyio.to_thread.run_sync(self.store.links, req.id)
        return EventShowReply(event=event, outgoing=outgoing, incoming=incoming)

    async def link(self, req: EventLinkRequest) -> EventLinkReply | ApiError:
        try:
            created = await anyio.to_thread.run_sync(
                lambda: self.store.link(req.from_id, req.to_id, req.type)
            )
        except StoreQueryError as exc:
            return ApiError(code=ErrorCode.BAD_REQUEST, message=str(exc))
        return EventLinkReply(created=created)

    async def rebuild(self, _req: RebuildRequest) -> RebuildReply:
        start = time.monotonic()
        # Ingest waits while the index is rebuilt; what arrives meanwhile stays in the stream.
        async with self.pause:
            events, stamps = await self.replayer()
            # Each row keeps the JetStream timestamp as received_at, as the live path does.
            stamp_of = {id(e): t for e, t in zip(events, stamps, strict=True)}
            stored = await anyio.to_thread.run_sync(
                lambda: self.store.rebuild(events, lambda e: stamp_of[id(e)])
            )
            # Links synthesis made are not in the stream; derive them again.
            await anyio.to_thread.run_sync(self.relinker, events)
        return RebuildReply(
            events=stored, stream_messages=len(events), took_s=round(time.monotonic() - start, 3)
        )
