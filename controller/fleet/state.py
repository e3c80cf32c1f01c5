"""Fleet state: every host's liveness and last session snapshot, in memory.

Fed by heartbeats and lifecycle notices, advanced by a liveness tick, read by the API.
Time is injected so tests and benchmarks can reason about it.

What the fleet overview needs (hosts per state, rows per tenant, which hosts have a problem,
hosts by name) is kept up to date as hosts change, so `fleet ps --problems` and the first
page of a listing cost what the answer holds, not a walk over 50,000 hosts
(docs/benchmarks.md).
"""

# Long on purpose: FleetState and the indexes it keeps in step: split, one invariant in two.
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.fleet.flags import flagged_indexes, row_count, session_flags
from controller.fleet.liveness import state_for_age
from controller.fleet.realtime import StateNews, apply, merge_live
from protocol.api import HostState, PsRow
from protocol.heartbeat import SUSPECT_AFTER_INTERVALS, Heartbeat, Keepalive, SessionSnapshot
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
    # Indexes of the sessions with a flag, set with the sessions (FleetState keeps both).
    flagged: tuple[int, ...] = ()
    # Sessions whose state came from a `session.state` event newer than the last heartbeat:
    # name -> the event's ts (controller/fleet/realtime.py). None for nearly every host.
    live: dict[str, float] | None = None
    # The sessions' digest as the agent sent it (None: an old agent's, or patched by a state
    # event since): the persister writes only the liveness columns while it is unchanged.
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    tenant: str
    host: str
    old: HostState | None
    new: HostState
    at: float  # wall clock
    reason: str
    silent_s: float | None = None  # for suspect/down: seconds since the last heartbeat


@dataclass(slots=True)
class Tally:
    """One tenant's hosts per state and `fleet ps` rows, kept as hosts change."""

    states: dict[HostState, int] = field(default_factory=lambda: dict.fromkeys(HostState, 0))
    rows: int = 0


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
    _arrival: list[HostKey] = field(default_factory=list)  # keys in the order first heard
    tallies: dict[str, Tally] = field(default_factory=dict)
    # Hosts not ok or with a flagged session: what `fleet ps --problems` lists.
    problem_hosts: set[HostKey] = field(default_factory=set)
    _sorted_problems: list[HostKey] | None = None
    _named: dict[str, list[HostKey]] = field(default_factory=dict)  # host id -> its keys
    # The hosts the clock can still make worse (not down, not stopped), least recently heard
    # first: the liveness tick stops at the first one heard too recently to be suspect, so
    # it costs the silent hosts, not the fleet (it walked all 50,000 every 0.5 s).
    _by_silence: OrderedDict[HostKey, None] = field(default_factory=OrderedDict)
    _intervals: dict[float, int] = field(default_factory=dict)  # interval_s -> hosts

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
            entry.flagged = flagged_indexes(entry.sessions)
            self._admit(entry)

    def on_heartbeat(self, hb: Heartbeat) -> Transition | None:
        key = (hb.tenant, hb.host)
        now_wall, now_mono = self.wall(), self.mono()
        entry = self.hosts.get(key)
        if entry is None:
            return self._first_heartbeat(hb, now_wall, now_mono)
        if hb.boot_id == entry.boot_id and (
            hb.seq <= entry.seq or entry.state is HostState.STOPPED
        ):
            # Duplicate or reordered: older news than we hold. A boot that announced its
            # shutdown sends nothing after it, so its heartbeat was sent before the notice
            # and only processed after it (heartbeats wait in the intake; notices do not).
            self.count("heartbeats_stale")
            return None
        same_boot = hb.boot_id == entry.boot_id
        if not same_boot:
            self.dirty.add(key)  # a restart is news worth writing now
        entry.boot_id, entry.agent_version = hb.boot_id, hb.agent_version
        self._heard(key, entry, hb.seq, hb.interval_s)
        tally = self.tallies[hb.tenant]
        tally.rows -= row_count(entry)
        sessions = hb.sessions
        if entry.live is not None:  # a state event came after this host's last heartbeat
            live: dict[str, float] = {}
            if same_boot:
                sessions, live = merge_live(entry.live, entry.sessions, sessions)
            entry.live = live or None
        entry.sessions, entry.flagged = sessions, flagged_indexes(sessions)
        entry.digest = hb.digest if sessions is hb.sessions else None
        tally.rows += row_count(entry)
        entry.last_seen, entry.last_seen_mono = now_wall, now_mono
        # An ordinary heartbeat is not written at once: the persister's rolling pass rewrites
        # every host within 60 s; state changes (below) are written within seconds.
        transition = self._set(entry, HostState.OK, "heartbeat")
        if transition is None:
            self._mark(key, entry)  # flags may have come or gone with the sessions
        return transition

    def on_keepalive(self, ka: Keepalive) -> Transition | None:
        """A keepalive of a boot we know: the host was heard, its sessions are as held (the
        digest check is the caller's). Liveness only, none of a heartbeat's per-session
        work: most heartbeats of a quiet fleet are keepalives (issue 18)."""
        key = (ka.tenant, ka.host)
        entry = self.hosts.get(key)
        if entry is None or entry.boot_id != ka.boot_id:
            return None  # the caller asked for a full snapshot; it introduces the host
        if ka.seq <= entry.seq or entry.state is HostState.STOPPED:
            self.count("heartbeats_stale")
            return None
        self._heard(key, entry, ka.seq, ka.interval_s)
        entry.last_seen, entry.last_seen_mono = self.wall(), self.mono()
        return self._set(entry, HostState.OK, "heartbeat")

    def _heard(self, key: HostKey, entry: HostEntry, seq: int, interval_s: float) -> None:
        self.count("heartbeats")
        if entry.restored:
            self.dirty.add(key)
            entry.restored = False
        entry.seq = seq
        if interval_s != entry.interval_s:
            self._count_interval(entry.interval_s, -1)
            self._count_interval(interval_s, 1)
        entry.interval_s = interval_s
        self._by_silence[key] = None
        self._by_silence.move_to_end(key)

    def _first_heartbeat(self, hb: Heartbeat, now_wall: float, now_mono: float) -> Transition:
        self._admit(
            HostEntry(
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
                flagged=flagged_indexes(hb.sessions),
                digest=hb.digest,
            )
        )
        self.dirty.add((hb.tenant, hb.host))
        self.count("heartbeats")
        return Transition(hb.tenant, hb.host, None, HostState.OK, now_wall, "first heartbeat")

    def on_session_state(self, news: StateNews) -> SessionSnapshot | None:
        """Apply a `session.state` event at once; the session's new snapshot, or None when
        it tells nothing newer than what the host's heartbeats said (or of another boot: the
        next heartbeat says what that boot runs)."""
        entry = self.hosts.get((news.tenant, news.host))
        if entry is None or entry.boot_id != news.boot_id:
            self.count("state_events_ignored")
            return None
        i = next((i for i, s in enumerate(entry.sessions) if s.name == news.session), -1)
        if i < 0:
            self.count("state_events_ignored")
            return None
        patched = apply(entry.sessions[i], news)
        if patched is None:
            self.count("state_events_stale")
            return None
        # A new list: the old one may be a heartbeat's, which others (synthesis) still read.
        entry.sessions = [*entry.sessions]
        entry.sessions[i] = patched
        entry.digest = None  # no longer what the agent named
        entry.live = {**(entry.live or {}), news.session: news.ts}
        self.count("state_events_applied")
        return patched

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
        states = self.tallies[entry.tenant].states
        states[old] -= 1
        states[new] += 1
        entry.state_since = self.wall()
        key = (entry.tenant, entry.host)
        self.dirty.add(key)
        self._mark(key, entry)
        return Transition(entry.tenant, entry.host, old, new, entry.state_since, reason, silent)

    def _admit(self, entry: HostEntry) -> None:
        key = (entry.tenant, entry.host)
        old = self.hosts.get(key)
        if old is not None:  # restored twice: count it once
            tally = self.tallies[old.tenant]
            tally.states[old.state] -= 1
            tally.rows -= row_count(old)
            self._count_interval(old.interval_s, -1)
        else:
            self._named.setdefault(entry.host, []).append(key)
            self._sorted = None
            self._arrival.append(key)
        self.hosts[key] = entry
        tally = self.tallies.setdefault(entry.tenant, Tally())
        tally.states[entry.state] += 1
        tally.rows += row_count(entry)
        self._count_interval(entry.interval_s, 1)
        if entry.state is HostState.DOWN or entry.state is HostState.STOPPED:
            self._by_silence.pop(key, None)
        else:
            self._by_silence[key] = None
            self._by_silence.move_to_end(key)
        self._mark(key, entry)

    def _count_interval(self, interval_s: float, n: int) -> None:
        left = self._intervals.get(interval_s, 0) + n
        if left:
            self._intervals[interval_s] = left
        else:
            self._intervals.pop(interval_s, None)

    def _mark(self, key: HostKey, entry: HostEntry) -> None:
        """Keep ``problem_hosts`` in step with the host's state and flags."""
        if entry.state is not HostState.OK or entry.flagged:
            if key not in self.problem_hosts:
                self.problem_hosts.add(key)
                self._sorted_problems = None
        elif key in self.problem_hosts:
            self.problem_hosts.discard(key)
            self._sorted_problems = None

    def tick(
        self, arrived: Callable[[HostKey], bool] | None = None, behind_s: float = 0.0
    ) -> list[Transition]:
        """Advance liveness from the controller's clock.

        ``arrived(key)`` says a heartbeat from that host has reached the controller and waits
        to be processed: the controller is behind, not the host, so it is not judged on
        this tick (it is again on the next, if the heartbeat turned out invalid).
        ``behind_s``: how far behind the heartbeats it processes the controller is (their
        typical lag, `Behind`); silence is measured on the hosts' timeline, so that much of
        it is the controller's own. Heartbeats still in the client's buffers are not parked
        yet, and without this a controller busy with a ramp of 100,000 hosts marked hundreds
        suspect (bench fanin).
        """
        if not self._by_silence:
            return []
        now = self.mono()
        in_grace = now - self.started_mono < self.grace_s
        # No host heard within this many seconds can be suspect, whatever its interval; the
        # hosts are in the order they were last heard, so the walk ends at the first such.
        horizon = SUSPECT_AFTER_INTERVALS * min(self._intervals)
        out = []
        settled = []  # down or stopped: only a heartbeat brings them back
        for key in self._by_silence:
            entry = self.hosts[key]
            age = now - entry.last_seen_mono - behind_s
            if age <= horizon:
                break
            if entry.state is HostState.STOPPED:
                settled.append(key)
                continue
            if entry.restored and in_grace:
                continue
            new = state_for_age(age, entry.interval_s)
            # Only a heartbeat makes a host ok again; the clock only makes things worse.
            if new is HostState.OK or new is entry.state:
                continue
            if arrived is not None and arrived(key):
                continue
            t = self._set(entry, new, "missed heartbeats", age)
            if t:
                out.append(t)
            if new is HostState.DOWN:
                settled.append(key)
        for key in settled:
            del self._by_silence[key]
        return out

    # -- output -----------------------------------------------------------------------------
    def arrival_keys(self) -> list[HostKey]:
        """Every host key in the order first heard (hosts are never forgotten): for the
        rolling passes that only need to visit each host in turn. Sorting 100,000 keys on
        every tick of a ramp cost the controller 29 % of its core (bench fanin, 100,000)."""
        return self._arrival

    def sorted_keys(self) -> list[HostKey]:
        if self._sorted is None:
            self._sorted = sorted(self.hosts)
        return self._sorted

    def problem_keys(self) -> list[HostKey]:
        """The problem hosts in (tenant, host) order (re-sorted only when the set changed)."""
        if self._sorted_problems is None:
            self._sorted_problems = sorted(self.problem_hosts)
        return self._sorted_problems

    def keys_named(self, host: str) -> list[HostKey]:
        """Every (tenant, host) key of hosts with this id, in tenant order."""
        return sorted(self._named.get(host, ()))

    def host_counts(self, tenant: str | None = None) -> dict[str, int]:
        """Hosts per state, of one tenant or the whole fleet."""
        counts = {s.value: 0 for s in HostState}
        for name, tally in self.tallies.items():
            if tenant is None or name == tenant:
                for state, n in tally.states.items():
                    counts[state.value] += n
        return counts

    def row_total(self, tenant: str | None = None) -> int:
        """`fleet ps` rows of one tenant or the whole fleet, unfiltered."""
        if tenant is not None:
            tally = self.tallies.get(tenant)
            return tally.rows if tally else 0
        return sum(t.rows for t in self.tallies.values())

    def heartbeat_age(self, entry: HostEntry) -> float:
        return max(0.0, self.wall() - entry.last_seen)

    def host_rows(self, entry: HostEntry, only: Iterable[int] | None = None) -> list[PsRow]:
        """The host's `fleet ps` rows; ``only`` picks sessions by index."""
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
            for s in (entry.sessions if only is None else [entry.sessions[i] for i in only])
        ]


def percentiles(values: Iterable[float], *qs: float) -> list[float]:
    """Nearest-rank percentiles (each q in 0..100), sorting once; 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return [0.0 for _ in qs]
    n = len(ordered)
    # Rank ceil(q% of n); round(x + 0.5) is not a ceiling: it rounds 99.5 to an even 100.
    return [ordered[max(1, min(n, math.ceil(q / 100 * n))) - 1] for q in qs]
