"""Heartbeats and lifecycle notices: a new boot_id each start, a monotonic seq, a jittered
period, and the loop that publishes them."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client

from agent.events.emitter import Connection
from agent.events.publisher import Wakeup
from protocol import encode, subjects
from protocol.heartbeat import JITTER, Heartbeat, SessionSnapshot
from protocol.lifecycle import Lifecycle, LifecycleKind

log = logging.getLogger(__name__)


def new_boot_id() -> str:
    return uuid.uuid4().hex[:16]


def jittered(interval_s: float, jitter: float = JITTER) -> float:
    """The next wait: interval ±jitter, so a fleet restarted together spreads out."""
    return interval_s * random.uniform(1 - jitter, 1 + jitter)


@dataclass
class HeartbeatClock:
    tenant: str
    host: str
    interval_s: float
    agent_version: str
    boot_id: str = field(default_factory=new_boot_id)
    seq: int = 0

    def next(self, sessions: list[SessionSnapshot], now: float) -> Heartbeat:
        self.seq += 1
        return Heartbeat(
            tenant=self.tenant,
            host=self.host,
            boot_id=self.boot_id,
            seq=self.seq,
            sent_at=now,
            interval_s=self.interval_s,
            agent_version=self.agent_version,
            sessions=sessions,
        )

    def lifecycle(self, kind: LifecycleKind, now: float) -> Lifecycle:
        return Lifecycle(
            tenant=self.tenant,
            host=self.host,
            boot_id=self.boot_id,
            event=kind,
            sent_at=now,
            agent_version=self.agent_version,
            interval_s=self.interval_s,
        )


Snapshots = Callable[[bool], Awaitable[list[SessionSnapshot]]]  # force a fresh pass?


class Heartbeats:
    def __init__(
        self, clock: HeartbeatClock, connection: Connection, snapshots: Snapshots, beat_now: Wakeup
    ) -> None:
        self.clock = clock
        self.connection = connection
        self.snapshots = snapshots
        self.beat_now = beat_now  # set by a command that changed the sessions: beat now

    async def beat_forever(self) -> None:
        forced = True
        while True:
            try:
                await self.publish(await self.snapshots(forced))
            except Exception:
                log.exception("heartbeat failed")
            forced = await self.beat_now.wait(jittered(self.clock.interval_s))

    async def publish(self, snapshots: list[SessionSnapshot]) -> None:
        nc = self.connection()
        # While disconnected, a heartbeat would only sit in nats-py's buffer and arrive stale.
        if nc is None or not nc.is_connected:
            return
        beat = self.clock.next(snapshots, time.time())
        await nc.publish(subjects.heartbeat(self.clock.tenant, self.clock.host), encode(beat))

    async def lifecycle(self, kind: LifecycleKind, nc: Client | None = None) -> None:
        nc = nc or self.connection()
        if nc is None:
            return
        notice = self.clock.lifecycle(kind, time.time())
        await nc.publish(subjects.lifecycle(self.clock.tenant, self.clock.host), encode(notice))
