"""What needs a human, as conditions: pure functions of fleet state and events.

A condition has a key (what it is about: one kind on one session or host); the queue keeps one
item per key while the condition lasts. Host-derived conditions (blocked, stuck, dead,
restarting, drift, host down) are recomputed whenever a host is scanned, and an item whose
condition is gone resolves itself. Event-derived ones follow the seed rule: only an event of
a known type with ``attention_candidate`` set pushes (an unknown type never does, whatever
its flags say), and it resolves when a later event ``resolves`` or ``supersedes`` it.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from controller.fleet.state import HostEntry
from protocol.api import HostState
from protocol.attention import AttentionKind
from protocol.events import KNOWN_EVENT_TYPES, Event, LinkType, Severity
from protocol.heartbeat import PaneState, SessionSnapshot, SessionState

# Kinds recomputed from a host's state on every scan; the rest come from events.
HOST_KINDS = frozenset(
    {
        AttentionKind.BLOCKED,
        AttentionKind.STUCK,
        AttentionKind.DEAD,
        AttentionKind.RESTARTING,
        AttentionKind.DRIFT,
        AttentionKind.HOST_DOWN,
    }
)

SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}

# What an ended condition says about itself.
RESOLUTIONS = {
    AttentionKind.BLOCKED: "dialog answered: no longer blocked",
    AttentionKind.STUCK: "output resumed or the run ended",
    AttentionKind.DEAD: "session alive again",
    AttentionKind.RESTARTING: "session alive again",
    AttentionKind.DRIFT: "runtime matches the roster again",
    AttentionKind.HOST_DOWN: "host heartbeats again",
}


class AttentionConfig(msgspec.Struct, frozen=True, kw_only=True):
    # A working session that printed nothing this long is stuck; per runtime, else the default.
    stuck_after_s: float = 600.0
    stuck_after_s_by_runtime: dict[str, float] = {}
    resolved_keep_s: float = 3600.0  # resolved items stay listed (`--all`) this long
    # Hosts rescanned per liveness tick, round robin: ~15 µs a 10-session host, so 500 cost
    # ~8 ms a tick; 50,000 hosts are all seen every 50 s (state events rescan a host at once).
    scan_hosts_per_tick: int = 500


@dataclass(frozen=True, slots=True)
class Condition:
    kind: AttentionKind
    severity: Severity
    tenant: str
    host: str
    session: str | None
    why: str
    since: float
    question: str | None = None
    cause: str | None = None
    ident: str = ""  # tells apart two event-derived items of one session

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.tenant}:{self.host}:{self.session or ''}:{self.ident}"


def blocked(
    tenant: str, host: str, snap: SessionSnapshot, question: str | None, now: float
) -> Condition:
    asks = f": {question}" if question else ""
    return Condition(
        AttentionKind.BLOCKED,
        Severity.WARNING,
        tenant,
        host,
        snap.name,
        f"blocked on a dialog{asks}",
        snap.state_since or now,
        question=question,
    )


def _session_conditions(
    tenant: str, host: str, snap: SessionSnapshot, now: float, config: AttentionConfig
) -> list[Condition]:
    out: list[Condition] = []
    where = (tenant, host, snap.name)
    if snap.pane is not PaneState.ALIVE:
        restarting = snap.restarts > 0 and snap.kind.value == "core" and snap.managed
        kind = AttentionKind.RESTARTING if restarting else AttentionKind.DEAD
        how = (
            f"exit status {snap.exit_status}"
            if snap.exit_status is not None
            else f"signal {snap.exit_signal}"
            if snap.exit_signal is not None
            else snap.pane.value
        )
        why = f"session {snap.pane.value} ({how})"
        if restarting:
            why += f", restarted {snap.restarts} times"
        out.append(Condition(kind, Severity.ERROR, *where, why, snap.state_since or now))
        return out
    if snap.state is SessionState.BLOCKED:
        out.append(blocked(tenant, host, snap, None, now))
    if snap.state is SessionState.WORKING and snap.last_output_at is not None:
        runtime = snap.runtime_configured or snap.runtime_observed or ""
        limit = config.stuck_after_s_by_runtime.get(runtime, config.stuck_after_s)
        silent = now - snap.last_output_at
        if silent > limit:
            out.append(
                Condition(
                    AttentionKind.STUCK,
                    Severity.WARNING,
                    *where,
                    f"working with no output for {int(silent // 60)} min",
                    snap.last_output_at,
                )
            )
    if snap.drift:
        out.append(
            Condition(
                AttentionKind.DRIFT,
                Severity.WARNING,
                *where,
                f"runs {snap.runtime_observed}, roster says {snap.runtime_configured}",
                snap.state_since or now,
            )
        )
    return out


def host_conditions(entry: HostEntry, now: float, config: AttentionConfig) -> list[Condition]:
    """Every host-derived condition of one host, from its state and last snapshot."""
    if entry.state is HostState.STOPPED:
        return []  # stopped on purpose: nobody needs to act
    out: list[Condition] = []
    if entry.state is HostState.DOWN:
        out.append(
            Condition(
                AttentionKind.HOST_DOWN,
                Severity.CRITICAL,
                entry.tenant,
                entry.host,
                None,
                "host down: no heartbeat",
                entry.state_since,
            )
        )
    stale = entry.state is not HostState.OK  # its snapshot is old: no stuck verdicts
    for snap in entry.sessions:
        for cond in _session_conditions(entry.tenant, entry.host, snap, now, config):
            if not (stale and cond.kind is AttentionKind.STUCK):
                out.append(cond)
    return out


def event_condition(event: Event) -> Condition | None:
    """The item a stored event opens, by the seed rule; None for most events."""
    if event.event_type not in KNOWN_EVENT_TYPES:
        return None  # unknown types never push, whatever they claim
    if not event.attention_candidate:
        return _review(event)
    if event.operator_action_required:
        kind = AttentionKind.ACTION_REQUIRED
    elif event.risk_detected:
        kind = AttentionKind.RISK
    else:
        kind = AttentionKind.CANDIDATE
    floor = Severity.ERROR if kind is AttentionKind.RISK else Severity.WARNING
    severity = max(event.severity, floor, key=SEVERITY_RANK.__getitem__)
    ident = event.dedupe_key or event.idempotency_key or f"{event.boot_id}:{event.seq}"
    return Condition(
        kind,
        severity,
        event.tenant,
        event.host,
        event.session,
        f"{event.event_type}: {event.summary}"[:300],
        event.ts,
        cause=event.idempotency_key or f"{event.host}:{event.boot_id}:{event.seq}",
        ident=ident,
    )


def _review(event: Event) -> Condition | None:
    """A run done with artifacts to look at (a PR, a report): an item until someone acks it."""
    if event.event_type != "run.completed" or not event.artifact_refs:
        return None
    refs = ", ".join(event.artifact_refs[:3]) + (" …" if len(event.artifact_refs) > 3 else "")
    return Condition(
        AttentionKind.REVIEW,
        Severity.INFO,
        event.tenant,
        event.host,
        event.session,
        f"run done, to review: {refs} ({event.summary})"[:300],
        event.ts,
        cause=event.idempotency_key or f"{event.host}:{event.boot_id}:{event.seq}",
        ident=event.dedupe_key or event.idempotency_key or f"{event.boot_id}:{event.seq}",
    )


def ended_by(event: Event) -> list[str]:
    """Idempotency keys of the events this one resolves or supersedes."""
    return [
        link.target
        for link in event.links
        if link.type is LinkType.RESOLVES or link.type is LinkType.SUPERSEDES
    ]
