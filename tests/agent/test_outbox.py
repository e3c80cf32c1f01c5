"""The outbox keeps every event until it is acknowledged, numbers them per boot, and stores
log offsets in the same transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.events.outbox import Outbox, OutboxFull
from protocol import decode
from protocol.events import Event


def draft(n: int, session: str = "s1") -> Event:
    return Event(
        tenant="acme",
        host="h1",
        session=session,
        boot_id="x",
        seq=0,
        ts=float(n),
        event_type="tool_call",
        summary=f"call {n}",
    )


def test_append_numbers_per_boot_and_survives_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", boot_id="boot1")
    box.open()
    events = box.append([draft(1), draft(2)], {"s1": ("/logs/s1.log", 120)})
    assert [(e.boot_id, e.seq) for e in events] == [("boot1", 1), ("boot1", 2)]
    box.close()

    again = Outbox(tmp_path / "outbox.db", boot_id="boot2")
    again.open()
    pending = again.peek()
    assert [p.msg_id for p in pending] == ["h1:boot1:1", "h1:boot1:2"]
    assert pending[0].subject == "fleet.acme.evt.h1.s1.tool_call"
    assert decode(pending[1].data, Event) == events[1]
    assert again.offset("s1") == ("/logs/s1.log", 120)
    assert again.pending == 2
    [third] = again.append([draft(3)])
    assert (third.boot_id, third.seq) == ("boot2", 1)  # a new boot starts at 1
    again.ack([pending[0].id])
    assert [p.msg_id for p in again.peek()] == ["h1:boot1:2", "h1:boot2:1"]
    assert again.pending == 2
    again.close()


def test_bound_holds_output_back_and_drops_observations(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", boot_id="b", max_events=3)
    box.open()
    box.append([draft(1), draft(2)], {"s1": ("/l", 10)})
    with pytest.raises(OutboxFull):
        box.append([draft(3), draft(4)], {"s1": ("/l", 20)})
    assert box.offset("s1") == ("/l", 10)  # the offset did not move: the output waits
    assert box.append([draft(5), draft(6)], droppable=True) == []
    assert box.counter("dropped_at_bound") == 2
    [e] = box.append([draft(7)])
    assert e.seq == 3  # nothing was numbered for what was refused
    box.close()
