"""Takeover and watch leases, held by the host agent (the one place that can compare-and-set
them without a race: every command for its sessions passes through it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.events.origin import Origin
from protocol.events import Event, SourceKind


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    reason: str
    since: float
    expires_at: float


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


@dataclass
class TakeoverLeases:
    leases: dict[str, Lease] = field(default_factory=dict)

    def holder(self, session: str, now: float) -> Lease | None:
        lease = self.leases.get(session)
        return lease if lease and lease.expires_at > now else None

    def acquire(
        self, session: str, holder: str, reason: str, ttl_s: float, now: float
    ) -> tuple[bool, Lease]:
        """Grant or renew (same holder); refuse while someone else's lease lives."""
        current = self.holder(session, now)
        if current is not None and current.holder != holder:
            return False, current
        since = current.since if current else now
        lease = Lease(holder, reason, since, now + ttl_s)
        self.leases[session] = lease
        return True, lease

    def release(self, session: str, holder: str, now: float) -> tuple[bool, Lease | None]:
        current = self.holder(session, now)
        if current is None:
            self.leases.pop(session, None)
            return True, None
        if current.holder != holder:
            return False, current
        del self.leases[session]
        return True, current

    def allows(self, session: str, who: str, now: float) -> Lease | None:
        """None if ``who`` may steer the session; else the lease that forbids it."""
        current = self.holder(session, now)
        return current if current is not None and current.holder != who else None

    def expire(self, now: float) -> list[tuple[str, Lease]]:
        gone = [(s, lease) for s, lease in self.leases.items() if lease.expires_at <= now]
        for session, _ in gone:
            del self.leases[session]
        return gone


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
