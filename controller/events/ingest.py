"""From JetStream into the event store: one file-backed stream per tenant, one durable pull
consumer, insert idempotently on (tenant, host, boot_id, seq), then ack.

A crash between insert and ack only means the batch is delivered again; the store drops what
it already holds. The stream is the log; the store is an index rebuilt from it on demand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from controller.events.pull import BatchPull, stream_position
from controller.events.store.core import EventStore
from controller.events.streams import (
    DURABLE,
    FETCH_BATCH,
    StreamSettings,
    ensure_consumer,
    ensure_stream,
)
from controller.events.system import system_event
from protocol import DecodeError, decode, subjects
from protocol.emission import excerpt
from protocol.events import Event, Severity

log = logging.getLogger(__name__)

# How long a fetch waits on a quiet stream; an event arriving meanwhile ends the wait at once
# (a one-shot pull request, controller/events/pull.py), so this bounds no latency.
FETCH_WAIT_S = 1.0
# After a batch short of FETCH_BATCH (ingest caught up), the next fetch starts no sooner than
# this after the last one started, so a steady trickle comes in batches of what arrived
# meanwhile, not one event each: a batch costs a transaction, two pull requests and an ack,
# and at 200 events/s one event a batch took 33 % of a core, paced 14 % (6 % with the 1 s
# batches before issue 17). An event on a quiet stream never waits for this: the fetch that
# hands it over started long before.
BATCH_GAP_S = 0.02


def invalid_event(
    msg_subject: str, stream_seq: int, stream: str, data: bytes, reason: str
) -> Event:
    """A stream message that is not a valid event becomes a validation_error, never nothing."""
    tokens = msg_subject.split(".")
    tenant = tokens[1] if len(tokens) > 1 else "unknown"
    host = tokens[3] if len(tokens) > 3 else "unknown"
    session = tokens[4] if len(tokens) > 4 else "unknown"
    try:
        subjects.parse(msg_subject)
    except subjects.SubjectError:
        host = session = "unknown"
    key = f"invalid:{stream}:{stream_seq}"
    return system_event(
        tenant,
        host,
        session,
        key,
        ts=0.0,
        event_type="validation_error",
        summary=f"invalid event on {msg_subject}: {reason}"[:500],
        severity=Severity.WARNING,
        provenance="controller ingest",
        payload={
            "reason": "invalid_event",
            "detail": reason,
            "excerpt": excerpt(data.decode("utf-8", errors="replace")),
        },
        tags=["validation_error", "invalid_event"],
    )


def event_from_message(
    subject: str,
    data: bytes,
    headers: dict[str, str] | None,
    stream: str,
    stream_seq: int,
    received_at: float,
) -> Event:
    try:
        event = decode(data, Event)
        # Decoded first, the subject compared after (cheap); parsing only explains a mismatch.
        if not subjects.names_event(
            subject, event.tenant, event.host, event.session, event.event_type
        ):
            raise DecodeError(_mismatch(subject, event))
        msg_id = (headers or {}).get("Nats-Msg-Id")
        if (
            event.seq > 0
            and msg_id
            and not subjects.names_msg_id(msg_id, event.host, event.boot_id, event.seq)
        ):
            raise DecodeError(f"Nats-Msg-Id {msg_id!r} does not match the event's boot and seq")
        return event
    except (subjects.SubjectError, DecodeError, ValueError) as exc:
        bad = invalid_event(subject, stream_seq, stream, data, str(exc))
        return msgspec.structs.replace(bad, ts=received_at)


def decode_message(msg: Msg, stream: str) -> tuple[Event, float]:
    """A stream message as the event it holds (or the validation_error it became), and when
    the stream stored it: what both live ingest and rebuild store."""
    stream_seq, _, received = stream_position(msg)
    event = event_from_message(msg.subject, msg.data, msg.headers, stream, stream_seq, received)
    return event, received


def _mismatch(subject: str, event: Event) -> str:
    where = subjects.parse(subject)  # a SubjectError says what is wrong with the subject
    if (event.tenant, event.host, event.session) != (where.tenant, where.host, where.session):
        return (
            f"body names {event.tenant}/{event.host}/{event.session}, the subject "
            f"{where.tenant}/{where.host}/{where.session}"
        )
    return f"subject type {where.event_type!r} but body {event.event_type!r}"


Decoded = tuple[list[Event], list[float]]
Stored = tuple[list[Msg], list[Event], list[int | None]]  # a batch, its events, their row ids
StoredHook = Callable[[Sequence[Event], Sequence[int | None]], Awaitable[None]]


@dataclass
class Ingest:
    store: EventStore
    tenants: list[str]
    settings: StreamSettings
    on_stored: StoredHook | None = None
    counters: dict[str, int] | None = None
    durable: str = DURABLE  # this replica's consumer (streams.durable_name)
    batch_gap_s: float = BATCH_GAP_S

    def count(self, name: str, n: int = 1) -> None:
        if self.counters is not None:
            self.counters[name] = self.counters.get(name, 0) + n

    async def setup(self, js_by_tenant: dict[str, JetStreamContext]) -> None:
        for tenant in self.tenants:
            await ensure_stream(js_by_tenant[tenant], tenant, self.settings)

    async def run(self, connections: dict[str, Client], pause: anyio.Lock) -> None:
        async with anyio.create_task_group() as tg:
            for tenant in self.tenants:
                tg.start_soon(self._consume, connections[tenant], tenant, pause)

    async def _consume(self, nc: Client, tenant: str, pause: anyio.Lock) -> None:
        stream = subjects.event_stream_name(tenant)
        js = nc.jetstream()
        await ensure_consumer(js, tenant, durable=self.durable)
        pull = BatchPull(nc, stream, self.durable)
        await pull.start()
        # Three stages, each a task, so one batch's insert (a worker thread) overlaps the
        # fetch and decode of the next and the synthesis and ack of the one before. Acks stay
        # in stream order, as AckPolicy.ALL needs: acking a message acks every one before it.
        fetched_in, fetched = anyio.create_memory_object_stream[tuple[list[Msg], Decoded]](1)
        stored_in, stored = anyio.create_memory_object_stream[Stored](1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._fetch, pull, js, tenant, stream, fetched_in)
                tg.start_soon(self._store_all, fetched, stored_in, tenant, pause)
                async with stored:
                    async for msgs, events, ids in stored:
                        await self._after(msgs, events, ids)
        finally:
            with anyio.CancelScope(shield=True):
                await pull.stop()

    async def _fetch(
        self, pull: BatchPull, js: JetStreamContext, tenant: str, stream: str, send: Any
    ) -> None:
        expected = 0  # the consumer's next delivery seq, once known
        async with send:
            while True:
                started = anyio.current_time()
                try:
                    msgs = await pull.fetch(FETCH_BATCH, FETCH_WAIT_S)
                    first = stream_position(msgs[0])[1] if msgs else expected
                    if expected and first != expected:
                        # Deliveries we never saw (lost in a reconnect): acking past them
                        # would ack them unread. This batch comes again after the floor.
                        await ensure_consumer(js, tenant, resume=True, durable=self.durable)
                        expected = 0
                        continue
                    if msgs:
                        expected = stream_position(msgs[-1])[1] + 1
                except Exception as exc:  # disconnected, consumer gone: wait and retry
                    log.warning(
                        "fetching events for %s failed: %s", tenant, exc or type(exc).__name__
                    )
                    await anyio.sleep(1.0)
                    continue
                if msgs:
                    await send.send((msgs, self._decode(msgs, stream)))
                if 0 < len(msgs) < FETCH_BATCH:  # caught up: let a trickle gather a while
                    await anyio.sleep(max(0.0, started + self.batch_gap_s - anyio.current_time()))

    async def _store_all(
        self,
        fetched: MemoryObjectReceiveStream[tuple[list[Msg], Decoded]],
        stored: MemoryObjectSendStream[Stored],
        tenant: str,
        pause: anyio.Lock,
    ) -> None:
        async with fetched, stored:
            async for msgs, (events, stamps) in fetched:
                ids = await self._store_until_done(events, stamps, tenant, pause)
                await stored.send((msgs, events, ids))

    async def _store_until_done(
        self, events: list[Event], stamps: list[float], tenant: str, pause: anyio.Lock
    ) -> list[int | None]:
        # Batches are stored and acked strictly in order, and a failed batch is retried
        # rather than skipped: with AckPolicy.ALL the next batch's ack would ack it too.
        attempt = 0
        while True:
            try:
                async with pause:  # held by a rebuild
                    return await anyio.to_thread.run_sync(self.store.insert_many, events, stamps)
            except Exception:
                attempt += 1
                self.count("store_write_failures")  # `fleet status` shows it
                log.exception(
                    "storing %d events of %s failed (attempt %d)", len(events), tenant, attempt
                )
                await anyio.sleep(min(30.0, 2.0 ** min(attempt, 5)))

    def _decode(self, msgs: list[Msg], stream: str) -> Decoded:
        events = []
        stamps = []
        for msg in msgs:
            event, received = decode_message(msg, stream)
            stamps.append(received)
            if event.event_type == "validation_error" and event.provenance == "controller ingest":
                self.count("invalid_events")
            events.append(event)
        return events, stamps

    async def _after(self, msgs: list[Msg], events: list[Event], ids: list[int | None]) -> None:
        """Count, synthesize and ack a stored batch. A failure here loses nothing: the rows
        are committed, and an unacked batch comes again after ack_wait as duplicates."""
        self.count("events_stored", sum(1 for i in ids if i is not None))
        self.count("events_duplicate", sum(1 for i in ids if i is None))
        try:
            if self.on_stored is not None:
                await self.on_stored(events, ids)
            # AckPolicy.ALL: acking the last message acknowledges the whole batch.
            await msgs[-1].ack()
        except Exception:
            log.exception("after storing %d events", len(events))


async def replay(js: JetStreamContext, tenant: str) -> tuple[list[Event], list[float]]:
    """Every message of a tenant's stream, in stream order, as events (for rebuild)."""
    stream = subjects.event_stream_name(tenant)
    info = await js.stream_info(stream)
    last = info.state.last_seq
    events: list[Event] = []
    stamps: list[float] = []
    if info.state.messages == 0:
        return events, stamps
    psub = await js.pull_subscribe(
        subjects.all_events(tenant),
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60
        ),
    )
    try:
        done = False
        while not done:
            try:
                msgs = await psub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except NatsTimeoutError:
                break
            for msg in msgs:
                event, received = decode_message(msg, stream)
                events.append(event)
                stamps.append(received)
            done = bool(msgs) and stream_position(msgs[-1])[0] >= last  # delivered in order
    finally:
        await psub.unsubscribe()
    return events, stamps
