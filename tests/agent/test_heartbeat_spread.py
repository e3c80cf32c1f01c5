"""The periodic full snapshots of a fleet started at once do not come in step: after a
forced full (start, reconnect, a controller asking), each agent counts to its next periodic
full from a random point."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio

from agent.events.publisher import Wakeup
from agent.heartbeat import HeartbeatClock, Heartbeats
from protocol import decode
from protocol.heartbeat import FULL_EVERY, Heartbeat, HostBeat, SessionSnapshot


class Wire:
    is_connected = True

    def __init__(self) -> None:
        self.beats: list[HostBeat] = []

    async def publish(self, _subject: str, data: bytes) -> None:
        self.beats.append(decode(data, HostBeat))  # type: ignore[arg-type]


SESSIONS = [SessionSnapshot(name="s1", runtime_configured="stub", runtime_observed="stub")]


def periodic_full_slots(spread: Any, hosts: int = 600) -> Counter[int]:
    """For each host: at which beat after its start its first periodic full came."""

    async def main() -> Counter[int]:
        slots: Counter[int] = Counter()
        for h in range(hosts):
            wire = Wire()
            kwargs = {} if spread is None else {"spread": spread}
            beats = Heartbeats(
                HeartbeatClock("t1", f"h{h}", 5.0, "t"),
                lambda w=wire: w,  # type: ignore[misc]
                None,  # type: ignore[arg-type]
                Wakeup(),
                **kwargs,
            )
            for _ in range(FULL_EVERY + 1):
                await beats.publish(SESSIONS)
            kinds = [isinstance(b, Heartbeat) for b in wire.beats]
            assert kinds[0], "the first heartbeat is full"
            slots[kinds.index(True, 1)] += 1
        return slots

    return anyio.run(main)


def test_fleet_started_at_once_spreads_its_periodic_fulls() -> None:
    slots = periodic_full_slots(None)
    assert set(slots) == set(range(1, FULL_EVERY + 1))  # every beat of the cycle is used
    assert max(slots.values()) < 600 / FULL_EVERY * 2  # none takes a crowd (mean 50)


def test_counting_from_the_forced_full_puts_every_host_in_step() -> None:
    assert periodic_full_slots(lambda _n: 0) == Counter({FULL_EVERY: 600})
