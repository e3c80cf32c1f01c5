"""The attention queue across replicas (issue 18), in-process: two `LiveFleet`s, each with its
own "store", fed the same stream of events. An ack or snooze answered by one is applied by the
other from its `attention.*` event; applying an event twice, or an older one late, changes
nothing; an item the other does not hold yet gets the ack when it opens; a restarted replica
gets acks, snoozes and event-derived items back from its store."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgspec
import pytest

from controller.api.access import Caller, admit
from controller.api.attention import AttentionApi
from controller.attention.feed import FeedRelay
from controller.attention.live import LiveFleet
from controller.attention.queue import AttentionQueue
from controller.attention.rules import AttentionConfig, Condition
from controller.events.store.core import EventStore
from controller.fleet.state import FleetState
from protocol.api import Role
from protocol.attention import (
    AttentionAction,
    AttentionActReply,
    AttentionActRequest,
    AttentionKind,
    ItemState,
)
from protocol.events import Event, Severity, SourceKind
from protocol.heartbeat import Heartbeat, SessionSnapshot, SessionState

T, H = "acme", "h1"


class Stream:
    """The tenant's event stream: what every replica publishes, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)


class Replica:
    def __init__(self, stream: Stream, clock: list[float]) -> None:
        self.state = FleetState(wall=lambda: clock[0])
        feed = FeedRelay(lambda: None)
        self.live = LiveFleet(self.state, AttentionConfig(), stream.publish, feed)
        self.api = AttentionApi(self.live)
        self.stored: set[str] = set()  # idempotency keys in its own store
        self.seen = 0  # how far into the stream its consumer is

    async def record(self) -> None:
        """What `LiveFleet.run` does: its pending item events into the stream."""
        while self.live._pending:
            await self.live.publish(self.live._pending.popleft())

    async def consume(self, stream: Stream) -> None:
        """Its durable consumer: every event not read yet, stored once, to on_stored."""
        batch = stream.events[self.seen :]
        self.seen = len(stream.events)
        ids: list[int | None] = []
        for event in batch:
            key = event.idempotency_key or ""
            ids.append(None if key in self.stored else len(self.stored) + 1)
            self.stored.add(key)
        await self.live.on_stored(batch, ids)

    def item(self, item_id: str) -> dict[str, object]:
        found = self.live.queue.find(item_id)
        assert found is not None, f"no item {item_id}"
        wire = found.wire()
        return {"state": wire.state, "by": wire.acked_by, "until": wire.snoozed_until}

    def kind(self, item_id: str) -> str:
        found = self.live.queue.find(item_id)
        assert found is not None, f"no item {item_id}"
        return found.cond.kind.value

    def open_ids(self) -> list[str]:
        return [i.id for i in self.live.queue.listing()]


async def sync(stream: Stream, *replicas: Replica) -> None:
    for _ in range(2):  # what one replica records on consuming, the others consume next
        for r in replicas:
            await r.record()
        for r in replicas:
            await r.consume(stream)


def candidate(key: str, ts: float) -> Event:
    return Event(
        tenant=T,
        host=H,
        session="coder",
        boot_id="b1",
        seq=int(ts),
        ts=ts,
        event_type="run.error",
        summary="it broke",
        idempotency_key=key,
        attention_candidate=True,
        severity=Severity.ERROR,
    )


def blocked_heartbeat(now: float, since: float) -> Heartbeat:
    snap = SessionSnapshot(
        name="reviewer",
        runtime_configured="stub",
        runtime_observed="stub",
        state=SessionState.BLOCKED,
        state_since=since,
    )
    return Heartbeat(
        tenant=T,
        host=H,
        boot_id="b1",
        seq=1,
        sent_at=now,
        interval_s=5.0,
        agent_version="x",
        sessions=[snap],
    )


async def ack(r: Replica, item_id: str, by: str = "ann") -> None:
    reply = await r.api.act(AttentionActRequest(id=item_id, action=AttentionAction.ACK, by=by))
    assert isinstance(reply, AttentionActReply) and reply.item.state is ItemState.ACKED, reply


async def snooze(r: Replica, item_id: str, seconds: float) -> None:
    request = AttentionActRequest(
        id=item_id, action=AttentionAction.SNOOZE, snooze_s=seconds, by="bob"
    )
    reply = await r.api.act(request)
    assert isinstance(reply, AttentionActReply) and reply.item.state is ItemState.SNOOZED


def test_an_ack_and_a_snooze_on_one_replica_are_seen_on_the_other() -> None:
    async def main() -> None:
        clock, stream = [1000.0], Stream()
        a, b = Replica(stream, clock), Replica(stream, clock)
        stream.events += [candidate("k1", 990.0), candidate("k2", 991.0)]
        await sync(stream, a, b)
        assert a.open_ids() == b.open_ids() and len(a.open_ids()) == 2  # the same ids
        first, second = sorted(a.open_ids())

        await ack(a, first)
        clock[0] += 1
        await snooze(a, second, 1800)
        assert sorted(b.open_ids()) == [first, second]  # not yet: B has not read the stream
        await sync(stream, a, b)
        for r in (a, b):
            assert r.item(first) == {"state": ItemState.ACKED, "by": "ann", "until": None}
            assert r.item(second) == {"state": ItemState.SNOOZED, "by": None, "until": 2801.0}
            assert r.open_ids() == []

        # The same events again (a redelivery, A's own coming back): nothing changes, and
        # nothing new is recorded.
        recorded = len(stream.events)
        for r in (a, b):
            r.seen = 0
            r.stored.clear()
        await sync(stream, a, b)
        assert len(stream.events) == recorded
        for r in (a, b):
            assert r.item(first)["state"] is ItemState.ACKED
            assert r.item(second)["until"] == 2801.0

        # B acks the snoozed one later: the later action wins on both, the older snooze
        # (replayed late) does not undo it.
        clock[0] += 5
        await ack(b, second, by="cy")
        await sync(stream, a, b)
        for r in (a, b):
            assert r.item(second) == {"state": ItemState.ACKED, "by": "cy", "until": None}
        old_snooze = [e for e in stream.events if e.event_type == "attention.snoozed"]
        await a.live.on_stored(old_snooze, [1] * len(old_snooze))
        assert a.item(second)["state"] is ItemState.ACKED

    anyio.run(main)


def test_an_ack_for_an_item_not_open_here_yet_applies_when_it_opens() -> None:
    async def main() -> None:
        clock, stream = [1000.0], Stream()
        a, b = Replica(stream, clock), Replica(stream, clock)
        # A hears the host first and opens its blocked item; the operator acks it there.
        a.state.on_heartbeat(blocked_heartbeat(clock[0], since=990.0))
        await a.live.tick()
        [item_id] = a.open_ids()
        await ack(a, item_id)
        await sync(stream, a, b)  # B stores the events before it holds the item
        assert b.live.queue.find(item_id) is None and len(b.live.queue.heard) == 1
        b.state.on_heartbeat(blocked_heartbeat(clock[0], since=990.0))
        await b.live.tick()
        assert b.item(item_id) == {"state": ItemState.ACKED, "by": "ann", "until": None}
        assert b.open_ids() == []

    anyio.run(main)


def test_one_condition_dated_apart_by_two_replicas_is_one_item() -> None:
    # A host down is dated by each replica's own clock: the ids differ, the condition is one.
    where = (AttentionKind.HOST_DOWN, Severity.CRITICAL, T, H, None, "host down")
    a, b = AttentionQueue(wall=lambda: 2000.0), AttentionQueue(wall=lambda: 2000.0)
    opened_a, opened_b = a.open(Condition(*where, 1000.0)), b.open(Condition(*where, 1001.5))
    assert opened_a and opened_b and opened_a.item.id != opened_b.item.id
    done = a.act(opened_a.item.id, AttentionAction.ACK, 0, "ann")
    assert done.action is not None
    applied = b.apply(done.action)
    assert applied is not None and applied.item.id == opened_b.item.id
    assert applied.item.state is ItemState.ACKED
    assert b.apply(done.action) is None  # twice: nothing
    found = b.find(opened_a.item.id)  # the other replica's id works here too
    assert found is not None and found.id == opened_b.item.id


def test_a_restarted_replica_gets_acks_snoozes_and_event_items_back(tmp_path: Path) -> None:
    async def main() -> None:
        clock, stream = [time.time()], Stream()
        a = Replica(stream, clock)
        stream.events.append(candidate("k1", clock[0] - 10))
        await sync(stream, a)
        a.state.on_heartbeat(blocked_heartbeat(clock[0], since=clock[0] - 5))
        await a.live.tick()
        event_item, host_item = sorted(a.open_ids(), key=a.kind)
        await ack(a, event_item)
        await snooze(a, host_item, 600)
        await sync(stream, a)

        store = EventStore(tmp_path / "events.db")
        store.open()
        try:
            store.insert_many(stream.events, clock[0])
            again = Replica(stream, clock)  # restarted: an empty queue, the same store
            assert await again.live.restore(store, [T]) == 1  # the event-derived item
            assert again.item(event_item)["state"] is ItemState.ACKED
            # The host-derived item comes back with the first scan, snoozed as it was.
            again.state.on_heartbeat(blocked_heartbeat(clock[0], since=clock[0] - 5))
            await again.live.tick()
            assert again.item(host_item) == a.item(host_item)
            assert again.open_ids() == []
        finally:
            store.close()

    anyio.run(main)


@pytest.mark.parametrize("proven", [True, False])
def test_an_ack_records_the_broker_checked_operator(proven: bool) -> None:
    req = AttentionActRequest(id="x", action=AttentionAction.ACK, by="mallory")
    admitted = admit(Caller("bob", Role.OPERATOR, None, proven), "attention.act", req)
    assert isinstance(admitted, AttentionActRequest)
    assert admitted.by == ("bob" if proven else "mallory")  # unproven: a no-auth fleet's claim


def test_an_ack_a_host_made_up_is_not_applied() -> None:
    """Only a controller's own attention events count (the broker also denies them to hosts:
    tests/system/test_isolation.py): one an agent sent, naming an operator, changes nothing."""

    async def main() -> None:
        clock, stream = [1000.0], Stream()
        a, b = Replica(stream, clock), Replica(stream, clock)
        stream.events.append(candidate("k1", 990.0))
        await sync(stream, a, b)
        [item_id] = a.open_ids()
        await ack(a, item_id)
        await a.record()
        real = next(e for e in stream.events if e.event_type == "attention.acked")
        forged = msgspec.structs.replace(
            real,
            source_kind=SourceKind.AGENT,
            idempotency_key="forged-1",
            payload={**real.payload, "at": real.payload["at"] + 5, "by": "alice"},
        )
        stream.events.remove(real)  # only the forgery reaches B
        stream.events.append(forged)
        await b.consume(stream)
        assert b.item(item_id)["state"] is ItemState.OPEN

    anyio.run(main)
