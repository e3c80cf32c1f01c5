"""Takeover leases in the outbox DB: each change is committed with its lease event, a new
agent process restores them, and an expiry is reported exactly once (the integration tests,
with a real kill -9, are tests/system/test_leases.py)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agent.control.leases import TakeoverLeases
from agent.events.origin import Origin
from agent.events.outbox import Outbox, OutboxFull
from agent.events.publisher import Wakeup
from protocol import decode
from protocol.events import Event


def open_leases(path: Path, boot: str, max_events: int = 1000) -> TakeoverLeases:
    box = Outbox(path, boot_id=boot, max_events=max_events)
    box.open()
    return TakeoverLeases(Origin("acme", "h1", boot), box, Wakeup())


def kinds(leases: TakeoverLeases) -> list[tuple[str, str, str]]:
    """(event type, session, holder) of every unsent event, in order."""
    out = []
    for pending in leases.outbox.peek(1000):
        event = decode(pending.data, Event)
        out.append((event.event_type, event.session, event.payload["holder"]))
    return out


def test_leases_survive_a_new_process_and_expire_once(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    first = open_leases(db, "boot1")

    async def before() -> None:
        assert (await first.acquire("long", "alice", "debug", 600, now=1000.0))[0]
        assert (await first.acquire("short", "alice", "quick", 5, now=1000.0))[0]
        assert not (await first.acquire("long", "bob", "mine", 60, now=1001.0))[0]

    anyio.run(before)
    first.outbox.close()  # as a kill -9 leaves it: nothing more is written

    second = open_leases(db, "boot2")
    anyio.run(second.restore, 1010.0)  # "short" ran out while no agent was running
    assert second.allows("long", "bob", 1010.0) is not None
    assert second.allows("long", "alice", 1010.0) is None
    assert second.holder("short", 1010.0) is None
    assert kinds(second) == [
        ("lease.acquired", "long", "alice"),
        ("lease.acquired", "short", "alice"),
        ("lease.expired", "short", "alice"),
    ]
    anyio.run(second.expire, 1011.0)  # the poll loop's sweep: nothing more ran out
    second.outbox.close()

    third = open_leases(db, "boot3")
    anyio.run(third.restore, 2000.0)  # now "long" has run out too, reported once
    anyio.run(third.expire, 2001.0)
    assert [k for k in kinds(third) if k[0] == "lease.expired"] == [
        ("lease.expired", "short", "alice"),
        ("lease.expired", "long", "alice"),
    ]
    assert third.outbox.leases() == {}


def test_release_and_force(tmp_path: Path) -> None:
    leases = open_leases(tmp_path / "outbox.db", "b")

    async def run() -> None:
        await leases.acquire("s", "alice", "r", 60, now=0.0)
        assert not (await leases.release("s", "bob", now=1.0))[0]
        ok, lease = await leases.release("s", "admin", now=1.0, force=True)
        assert ok and lease is not None and lease.holder == "alice"

    anyio.run(run)
    assert leases.outbox.leases() == {}
    assert kinds(leases)[-1] == ("lease.released", "s", "alice")


def test_a_lease_not_written_is_not_held(tmp_path: Path) -> None:
    leases = open_leases(tmp_path / "outbox.db", "b", max_events=1)
    anyio.run(lambda: leases.acquire("a", "alice", "r", 60, now=0.0))
    with pytest.raises(OutboxFull):  # no room for its event: no lease either
        anyio.run(lambda: leases.acquire("b", "alice", "r", 60, now=0.0))
    assert leases.holder("b", 1.0) is None
    assert set(leases.outbox.leases()) == {"a"}
