"""Takeover and watch leases, held by the host agent (the one place that can compare-and-set
them without a race: every command for its sessions passes through it).

Takeover leases are durable: each change is written to the outbox DB in the same transaction
as the lease event that announces it, so an agent killed and restarted holds exactly what it
granted, and a lease that ran out while it was down is reported once, at startup. What a
lease may ask for (ttl, reason, watcher) is bounded by protocol/commands.py: a request out of
range does not decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio

from agent.events.origin import Origin
from agent.events.outbox import LeaseRow, Outbox
from agent.events.publisher import Wakeup
from protocol.events import Event, SourceKind


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    reason: str
    since: float
    expires_at: float

    def row(self) -> LeaseRow:
        return (self.holder, self.reason, self.since, self.expires_at)


def lease_event(origin: Origin, session: str, kind: str, lease: Lease, who: str) -> Event:
    """``kind`` is lease.acquired, lease.released or lease.expired."""
    return origin.event(
        session,
        kind,
        f"{session}: {kind.split('.')[1]} by {who} ({lease.reason})",
        SourceKind.OPERATOR,
        payload={
            "holder": lease.holder,
            "reason": lease.reason,
            "since": lease.since,
            "expires_at": lease.expires_at,
            "by": who,
        },
    )


class TakeoverLeases:
    """Reads (`holder`, `allows`) come from memory; every change goes to disk first, under
    one lock, and reaches memory only once it is committed."""

    def __init__(self, origin: Origin, outbox: Outbox, wakeup: Wakeup) -> None:
        self.origin = origin
        self.outbox = outbox
        self.wakeup = wakeup
        self.leases: dict[str, Lease] = {}
        self._lock = anyio.Lock()

    def holder(self, session: str, now: float) -> Lease | None:
        lease = self.leases.get(session)
        return lease if lease and lease.expires_at > now else None

    def allows(self, session: str, who: str, now: float) -> Lease | None:
        """None if ``who`` may steer the session; else the lease that forbids it."""
        current = self.holder(session, now)
        return current if current is not None and current.holder != who else None

    async def acquire(
        self, session: str, holder: str, reason: str, ttl_s: float, now: float
    ) -> tuple[bool, Lease]:
        """Grant or renew (same holder); refuse while someone else's lease lives."""
        async with self._lock:
            current = self.holder(session, now)
            if current is not None and current.holder != holder:
                return False, current
            lease = Lease(holder, reason, current.since if current else now, now + ttl_s)
            events = self._expired_events([session], now)  # a stale lease it replaces
            events.append(lease_event(self.origin, session, "lease.acquired", lease, holder))
            await self._write(events, {session: lease.row()})
            self.leases[session] = lease
            return True, lease

    async def release(
        self, session: str, who: str, now: float, *, force: bool = False
    ) -> tuple[bool, Lease | None]:
        """``force`` (an admin's, checked by the controller) releases anyone's lease; the event
        names both the holder and ``who``. A lease that already ran out is left to `expire`,
        which reports it."""
        async with self._lock:
            current = self.holder(session, now)
            if current is None:
                return True, None
            if current.holder != who and not force:
                return False, current
            event = lease_event(self.origin, session, "lease.released", current, who)
            await self._write([event], {session: None})
            del self.leases[session]
            return True, current

    async def expire(self, now: float) -> None:
        """Drop the leases that ran out, one lease.expired event each."""
        async with self._lock:
            gone = [s for s, lease in self.leases.items() if lease.expires_at <= now]
            if gone:
                await self._write(self._expired_events(gone, now), dict.fromkeys(gone))
                for session in gone:
                    del self.leases[session]

    async def restore(self, now: float) -> None:
        """At startup: hold the stored leases again; report those that ran out meanwhile."""
        rows = await anyio.to_thread.run_sync(self.outbox.leases)
        async with self._lock:
            self.leases = {s: Lease(*row) for s, row in rows.items()}
        await self.expire(now)

    def _expired_events(self, sessions: Iterable[str], now: float) -> list[Event]:
        out = []
        for session in sessions:
            lease = self.leases.get(session)
            if lease is not None and lease.expires_at <= now:
                out.append(lease_event(self.origin, session, "lease.expired", lease, lease.holder))
        return out

    async def _write(self, events: list[Event], changes: dict[str, LeaseRow | None]) -> None:
        await anyio.to_thread.run_sync(lambda: self.outbox.append(events, leases=changes))
        self.wakeup.set()


@dataclass
class WatchLeases:
    """Watchers per session; output streams only while at least one lease lives."""

    watchers: dict[str, dict[str, float]] = field(default_factory=dict)
    _resync: set[str] = field(default_factory=set)  # sessions whose next frame is a snapshot

    def renew(self, session: str, watcher: str, ttl_s: float, now: float) -> bool:
        """Returns True if this starts a new watch (the caller sends a snapshot)."""
        per = self.watchers.setdefault(session, {})
        new = watcher not in per or per[watcher] <= now
        per[watcher] = now + ttl_s
        return new

    def active(self, now: float) -> list[str]:
        live = []
        for session, per in list(self.watchers.items()):
            for watcher, until in list(per.items()):
                if until <= now:
                    del per[watcher]
            if per:
                live.append(session)
            else:
                del self.watchers[session]
        return live

    def want_snapshot(self, session: str) -> None:
        self._resync.add(session)

    def take_snapshot(self, session: str) -> bool:
        """True once after `want_snapshot`: this frame must be a full snapshot."""
        wanted = session in self._resync
        self._resync.discard(session)
        return wanted
