"""The attention queue across replicas and restarts, from the `attention.*` events.

Each replica keeps its own queue in memory, and every change it makes is an event in the
shared stream (controller/attention/live.py records them). Those events carry enough
(``payload``) for any replica to apply them: an `attention.acked|snoozed` becomes an
``Action`` on every replica's queue as it stores the event (``action_of``), an
`attention.opened` tells the id another replica gave the item. At startup ``restore`` reads the
recent `attention.*` events of the replica's own store: event-derived items still open come
back, and the acks and snoozes of the rest wait for their items to open with the first scan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from controller.attention.heard import Action
from controller.attention.queue import AttentionQueue, Change
from controller.attention.rules import HOST_KINDS, Condition
from controller.events.store.core import EventStore
from protocol.attention import AttentionKind
from protocol.events import CONTROLLER_ONLY_TYPES, Event, Severity
from protocol.events_api import StoredEvent

log = logging.getLogger(__name__)

TYPES = CONTROLLER_ONLY_TYPES
RESTORE_S = 7 * 86400.0  # how far back a restart looks for acks, snoozes and open items
MAX_RESTORED = 10_000  # events of each type, the newest

AnyEvent = Event | StoredEvent


def payload(change: Change) -> dict[str, Any]:
    """What an item's event carries beyond its id, kind and question, for other replicas."""
    item, cond, action = change.item, change.cond, change.action
    out: dict[str, Any] = {"session": item.session, "since": item.since}
    if cond is not None:
        out |= {"key": cond.key, "ident": cond.ident}
    if change.what == "opened":
        out |= {"severity": item.severity.value, "why": item.why, "cause": item.cause}
    if action is not None:
        out |= {"at": action.at, "by": action.by, "until": action.until}
    return out


def action_of(event: AnyEvent) -> Action | None:
    """The ack or snooze an `attention.acked|snoozed` event records (older events, made
    before replicas shared them, carry no time: the event's own stands for it)."""
    what = event.event_type.removeprefix("attention.")
    p = event.payload
    item_id = p.get("item")
    if what not in ("acked", "snoozed") or not isinstance(item_id, str):
        return None
    until = _num(p.get("until"))
    if what == "snoozed" and until is None:
        return None
    by = p.get("by")
    return Action(
        item_id,
        what,
        _num(p.get("at")) or event.ts,
        by if isinstance(by, str) else "?",
        until,
        _str(p.get("key")),
        _num(p.get("since")),
    )


def opened_of(event: AnyEvent) -> tuple[str, str, float] | None:
    """(item id, condition key, since) of an `attention.opened` event that names them."""
    p = event.payload
    item_id, key, since = p.get("item"), _str(p.get("key")), _num(p.get("since"))
    if event.event_type != "attention.opened" or not isinstance(item_id, str):
        return None
    return None if key is None or since is None else (item_id, key, since)


def condition_of(event: AnyEvent) -> Condition | None:
    """The condition of an event-derived item, from its `attention.opened` (host-derived
    ones come back from the scans, which also tell whether they still hold)."""
    p = event.payload
    try:
        kind, severity = AttentionKind(p.get("kind")), Severity(p.get("severity"))
    except ValueError:
        return None
    since, why, session = _num(p.get("since")), _str(p.get("why")), p.get("session")
    if kind in HOST_KINDS or since is None or why is None or not isinstance(session, str):
        return None
    return Condition(
        kind,
        severity,
        event.tenant,
        event.host,
        session,
        why,
        since,
        question=_str(p.get("question")),
        cause=_str(p.get("cause")),
        ident=_str(p.get("ident")) or "",
    )


def recent(store: EventStore, tenants: Iterable[str], since: float) -> list[StoredEvent]:
    """The store's `attention.*` events of ``tenants`` since then, in the order stored."""
    mine = set(tenants)
    found = [
        e
        for event_type in TYPES
        for e in store.search(event_type=event_type, since=since, limit=MAX_RESTORED)
        if e.tenant in mine
    ]
    return sorted(found, key=lambda e: e.id)


def restore(queue: AttentionQueue, events: Iterable[AnyEvent]) -> int:
    """Replay recorded item events into an empty queue; returns the items opened."""
    events = list(events)
    resolved = {e.payload.get("item") for e in events if e.event_type == "attention.resolved"}
    opened = 0
    for event in events:
        if event.payload.get("item") in resolved:
            continue  # ended: nothing to bring back, nothing to apply
        named = opened_of(event)
        if named is not None:
            queue.hear_opened(*named)  # so it opens again under the id it had
            cond = condition_of(event)
            if cond is not None and queue.open(cond) is not None:
                opened += 1
        action = action_of(event)
        if action is not None:
            queue.apply(action)
    kept = len(queue.heard)
    log.info("attention: %d items back, %d remembered, from %d events", opened, kept, len(events))
    return opened


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
