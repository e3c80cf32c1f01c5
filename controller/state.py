"""Fleet state: every host's liveness and last session snapshot, in memory.

Fed by heartbeats and lifecycle notices, advanced by a liveness tick, read by the API.
Time is injected so tests and benchmarks can reason about it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.liveness import state_for_age
from protocol.api import Flag, HostState, PsRow
from protocol.heartbeat import Heartbeat, PaneState, SessionSnapshot
from protocol.lifecycle import Lifecycle, LifecycleKind

HostKey = tuple[str, str]  # (tenant, host)


@dataclass(slots=True)
class HostEntry:
    tenant: str
    host: str
    boot_id: str
    seq: int
    interval_s: float
    agent_version: str
    state: HostState
    state_since: float  # wall clock
    last_seen: float  # wall clock of the last heartbeat received
    last_seen_mono: float
    sessions: list[SessionSnapshot]
    restored: bool = False
    # Indexes of the sessions with a flag, cached for the sessions list they were computed on
    # (`fleet ps --problems` over 500,000 sessions must not re-examine every one each call).
    _problems: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    tenant: str
    host: str
    old: HostState | None
    new: HostState
    at: float  # wall clock
    reason: str
    silent_s: float | None = None  # for suspect/down: seconds since the last heartbeat


def has_flag(snap: SessionSnapshot) -> bool:
    """session_flags(snap) != [], without building the list."""
    return (
        snap.pane is not PaneState.ALIVE
        or not snap.managed
        or snap.boot_enabled.value == "no"
        or (
            snap.runtime_observed is not None
            and snap.runtime_configured is not None
            and snap.runtime_observed != snap.runtime_configured
        )
    )


def problem_indexes(entry: HostEntry) -> list[int]:
    """Which of the host's sessions carry a flag (cached per heartbeat)."""
    # Invalidated where the sessions are replaced (FleetState.on_heartbeat). Keying the cache
    # on id(entry.sessions) is not safe: a freed list's address is reused by a later one.
    if entry._problems is None:
        entry._problems = [i for i, s in enumerate(entry.sessions) if has_flag(s)]
    return entry._problems


def session_flags(snap: SessionSnapshot) -> list[Flag]:
    flags = []
    if snap.drift:
        flags.append(Flag.DRIFT)
    if snap.pane is PaneState.DEAD:
        flags.append(Flag.DEAD)
    if snap.pane is PaneState.MISSING:
        flags.append(Flag.MISSING)
    if snap.boot_enabled.value == "no":
        flags.append(Flag.BOOT_DISABLED)
    if not snap.managed:
        flags.append(Flag.UNMANAGED)
    return flags


@dataclass
class FleetState:
    grace_s: float = 15.0
    mono: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    hosts: dict[HostKey, HostEntry] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    dirty: set[HostKey] = field(default_factory=set)
    started_mono: float = 0.0
    _sorted: list[HostKey] | None = None
    # The last heartbeat lags (controller clock at processing - host's sent_at), seconds.
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))

    def __post_init__(self) -> None:
        self.started_mono = self.mono()

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- input ------------------------------------------------------------------------------
    def restore(self, entries: Iterable[HostEntry]) -> None:
        """Hosts known before a restart: listed again, their liveness clock restarted now."""
        now = self.mono()
        for entry in entries:
            entry.last_seen_mono = now
            entry.restored = True
            self.hosts[(entry.tenant, entry.host)] = entry
        self._sorted = None

    def on_heartbeat(self, hb: Heartbeat) -> Transition | None:
        key = (hb.tenant, hb.host)
        now_wall, now_mono = self.wall(), self.mono()
        self.lags.append(now_wall - hb.sent_at)
        entry = self.hosts.get(key)
        if entry is None:
            self.hosts[key] = HostEntry(
                tenant=hb.tenant,
                host=hb.host,
                boot_id=hb.boot_id,
                seq=hb.seq,
                interval_s=hb.interval_s,
                agent_version=hb.agent_version,
                state=HostState.OK,
                state_since=now_wall,
                last_seen=now_wall,
                last_seen_mono=now_mono,
                sessions=hb.sessions,
            )
            self._sorted = None
            self.dirty.add(key)
            self.count("heartbeats")
            return Transition(hb.tenant, hb.host, None, HostState.OK, now_wall, "first heartbeat")
        if hb.boot_id == entry.boot_id and hb.seq <= entry.seq:
            self.count("heartbeats_stale")  # duplicate or reordered: older news than we hold
            return None
        self.count("heartbeats")
        if hb.boot_id != entry.boot_id or entry.restored:
            self.dirty.add(key)  # a restart is news worth writing now
        entry.boot_id, entry.seq = hb.boot_id, hb.seq
        entry.interval_s, entry.agent_version = hb.interval_s, hb.agent_version
        entry.sessions, entry._problems = hb.sessions, None
        entry.last_seen, entry.last_seen_mono = now_wall, now_mono
        entry.restored = False
        # An ordinary heartbeat is not written at once: the persister's rolling pass rewrites
        # every host within 30 s; state changes (below) are written within seconds.
        return self._set(entry, HostState.OK, "heartbeat")

    def on_lifecycle(self, lc: Lifecycle) -> Transition | None:
        entry = self.hosts.get((lc.tenant, lc.host))
        self.count(f"lifecycle_{lc.event.value}")
        if entry is None:
            return None  # the first heartbeat introduces a host, not a notice
        if lc.event is LifecycleKind.SHUTDOWN and lc.boot_id == entry.boot_id:
            self.dirty.add((lc.tenant, lc.host))
            return self._set(entry, HostState.STOPPED, "graceful shutdown")
        return None

    def _set(
        self, entry: HostEntry, new: HostState, reason: str, silent: float | None = None
    ) -> Transition | None:
        if entry.state is new:
            return None
        old, entry.state = entry.state, new
        entry.state_since = self.wall()
        self.dirty.add((entry.tenant, entry.host))
        return Transition(entry.tenant, entry.host, old, new, entry.state_since, reason, silent)

    def tick(self) -> list[Transition]:
        """Advance liveness from the controller's clock."""
        now = self.mono()
        in_grace = now - self.started_mono < self.grace_s
        out = []
        for entry in self.hosts.values():
            if entry.state is HostState.STOPPED or (entry.restored and in_grace):
                continue
            age = now - entry.last_seen_mono
            new = state_for_age(age, entry.interval_s)
            # Only a heartbeat makes a host ok again; the clock only makes things worse.
            if new is HostState.OK or new is entry.state:
                continue
            if entry.state is HostState.DOWN:
                continue
            t = self._set(entry, new, "missed heartbeats", age)
            if t:
                out.append(t)
        return out

    # -- output -----------------------------------------------------------------------------
    def sorted_keys(self) -> list[HostKey]:
        if self._sorted is None:
            self._sorted = sorted(self.hosts)
        return self._sorted

    def heartbeat_age(self, entry: HostEntry) -> float:
        return max(0.0, self.wall() - entry.last_seen)

    def host_rows(self, entry: HostEntry) -> list[PsRow]:
        age = round(self.heartbeat_age(entry), 3)
        if not entry.sessions:
            return [
                PsRow(
                    tenant=entry.tenant,
                    host=entry.host,
                    host_state=entry.state,
                    heartbeat_age_s=age,
                    session=None,
                )
            ]
        return [
            PsRow(
                tenant=entry.tenant,
                host=entry.host,
                host_state=entry.state,
                heartbeat_age_s=age,
                session=s,
                flags=session_flags(s),
            )
            for s in entry.sessions
        ]

    def states_count(self) -> dict[str, int]:
        counts = {s.value: 0 for s in HostState}
        for entry in self.hosts.values():
            counts[entry.state.value] += 1
        return counts


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]
