"""Session states in real time: a `session.state` event applied over the last heartbeat's
snapshot, and kept until a heartbeat sampled after it arrives.

Heartbeats stay the liveness signal and the full snapshot; a state event only moves one
session's ``state`` and ``state_since``. The two come by different paths (core NATS for the
event, the parked heartbeat intake for the snapshot), so either may arrive first. They are
ordered by the host's own clock: the agent stamps a change's event ``ts`` and the snapshot's
``state_since`` with the same instant, so a snapshot whose ``state_since`` is older than the
event's ``ts`` was sampled before the change and must not undo it (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from protocol.events import Event
from protocol.heartbeat import SessionSnapshot, SessionState

_STATES = {s.value: s for s in SessionState}


@dataclass(frozen=True, slots=True)
class StateNews:
    """What a `session.state` event says, checked."""

    tenant: str
    host: str
    session: str
    boot_id: str
    ts: float
    state: SessionState
    rule: str | None
    line: str | None


def state_news(event: Event) -> StateNews | None:
    """The state change an event reports, or None if it is not a well-formed one."""
    if event.event_type != "session.state":
        return None
    payload: dict[str, Any] = event.payload
    new = payload.get("new")
    state = _STATES.get(new) if isinstance(new, str) else None
    if state is None:
        return None
    rule, line = payload.get("rule"), payload.get("line")
    return StateNews(
        event.tenant,
        event.host,
        event.session,
        event.boot_id,
        event.ts,
        state,
        rule if isinstance(rule, str) else None,
        line if isinstance(line, str) else None,
    )


def apply(snap: SessionSnapshot, news: StateNews) -> SessionSnapshot | None:
    """The snapshot with the news applied, or None when the snapshot is as new already."""
    if snap.state_since is not None and snap.state_since >= news.ts:
        return None
    return msgspec.structs.replace(snap, state=news.state, state_since=news.ts)


def merge_live(
    live: dict[str, float], old: list[SessionSnapshot], new: list[SessionSnapshot]
) -> tuple[list[SessionSnapshot], dict[str, float]]:
    """A heartbeat's sessions, with the states of ``live`` sessions (name -> event ts) kept
    from ``old`` where the heartbeat was sampled before their event; the names still ahead
    of the heartbeat come back as the new ``live``. Runs only for hosts with live news."""
    ahead = {s.name: s for s in old if s.name in live}
    out = list(new)
    still: dict[str, float] = {}
    for i, snap in enumerate(out):
        ts = live.get(snap.name)
        if ts is None:
            continue
        if snap.state_since is not None and snap.state_since >= ts:
            continue  # the heartbeat caught up
        held = ahead.get(snap.name)
        if held is None:
            continue
        out[i] = msgspec.structs.replace(snap, state=held.state, state_since=held.state_since)
        still[snap.name] = ts
    return out, still
