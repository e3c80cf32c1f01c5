"""Heartbeats and lifecycle notices: a new boot_id each start, a monotonic seq, a jittered
period, and the loop that publishes them.

A heartbeat costs what changed (issue 18): the full snapshot when the sessions differ from
the last one sent, when a command changed them, when a controller asks (`SnapshotWanted` on
the host's command subject) and at least every FULL_EVERY beats; otherwise a keepalive that
names the last snapshot by its digest.
"""

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
from protocol import DecodeError, decode, encode, subjects
from protocol.heartbeat import (
    FULL_EVERY,
    JITTER,
    Heartbeat,
    Keepalive,
    SessionSnapshot,
    SnapshotWanted,
    snapshot_digest,
)
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

    def next(
        self, sessions: list[SessionSnapshot], now: float, digest: str | None = None
    ) -> Heartbeat:
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
            digest=digest,
        )

    def keepalive(self, digest: str, now: float) -> Keepalive:
        self.seq += 1
        return Keepalive(
            tenant=self.tenant,
            host=self.host,
            boot_id=self.boot_id,
            seq=self.seq,
            sent_at=now,
            interval_s=self.interval_s,
            digest=digest,
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
        self,
        clock: HeartbeatClock,
        connection: Connection,
        snapshots: Snapshots,
        beat_now: Wakeup,
        full_every: int = FULL_EVERY,
        spread: Callable[[int], int] = random.randrange,
    ) -> None:
        self.clock = clock
        self.connection = connection
        self.snapshots = snapshots
        self.beat_now = beat_now  # set by a command that changed the sessions: beat now
        self.full_every = full_every  # 1: every heartbeat full, as before issue 18
        self.spread = spread  # where the count to the periodic full starts after a forced one
        self.full_next = True  # the next heartbeat carries the snapshot, whatever it holds
        self._digest: str | None = None  # of the last full snapshot sent
        self._since_full = 0  # keepalives sent since it
        self.sent = {"full": 0, "keepalive": 0, "wanted": 0}

    async def beat_forever(self) -> None:
        forced = True
        while True:
            try:
                if forced:
                    self.full_next = True
                await self.publish(await self.snapshots(forced))
            except Exception:
                log.exception("heartbeat failed")
            forced = await self.beat_now.wait(jittered(self.clock.interval_s))

    async def publish(self, snapshots: list[SessionSnapshot]) -> None:
        nc = self.connection()
        # While disconnected, a heartbeat would only sit in nats-py's buffer and arrive stale.
        if nc is None or not nc.is_connected:
            return
        now = time.time()
        digest = snapshot_digest(snapshots)
        beat: Heartbeat | Keepalive
        forced = self.full_next
        if forced or digest != self._digest or self._since_full + 1 >= self.full_every:
            beat = self.clock.next(snapshots, now, digest)
            self._digest, self.full_next = digest, False
            # Forced fulls (start, reconnect, a controller asking) reach a whole fleet at
            # once, after a deploy or a broker restart: counting on from a random point keeps
            # the periodic fulls of 100,000 hosts from coming in step, 100,000 in one interval
            # every twelfth (bench fanin saw the lag go past 5 s at each such wave).
            self._since_full = self.spread(self.full_every) if forced else 0
            self.sent["full"] += 1
        else:
            beat = self.clock.keepalive(digest, now)
            self._since_full += 1
            self.sent["keepalive"] += 1
        await nc.publish(subjects.heartbeat(self.clock.tenant, self.clock.host), encode(beat))

    async def snapshot_wanted(self, data: bytes) -> None:
        """A controller asked for a full snapshot (handed over by the command server, which
        owns the one subscription to the host's command subject)."""
        try:
            wanted = decode(data, SnapshotWanted)
        except DecodeError as exc:
            log.warning("refused a snapshot request: %s", exc)
            return
        if (wanted.tenant, wanted.host) != (self.clock.tenant, self.clock.host):
            return
        self.sent["wanted"] += 1
        self.full_next = True
        self.beat_now.set()

    async def lifecycle(self, kind: LifecycleKind, nc: Client | None = None) -> None:
        nc = nc or self.connection()
        if nc is None:
            return
        if kind is not LifecycleKind.SHUTDOWN:
            self.full_next = True  # (re)connected: a controller may have missed snapshots
        notice = self.clock.lifecycle(kind, time.time())
        await nc.publish(subjects.lifecycle(self.clock.tenant, self.clock.host), encode(notice))
