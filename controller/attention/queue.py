"""The attention queue: one item per condition while it lasts, newest and most severe first.

An item opens when its condition appears (controller/attention/rules.py), can be acked (seen;
it stays until the condition ends) or snoozed (hidden until a time, then open again), and
resolves itself when the condition ends, saying why. Every change comes back as a ``Change``
for the caller to record as an event and push to live views. In memory: after a controller
restart the host-derived items come back with the first scan, event-derived ones do not.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from controller.attention.rules import HOST_KINDS, RESOLUTIONS, SEVERITY_RANK, Condition
from protocol.attention import AttentionAction, AttentionItem, AttentionKind, ItemState

# Kinds whose text may become more precise while the condition holds (a dead pane's exit
# status arrives a pass after it is seen dead); others keep the text they opened with.
REFINED = frozenset({AttentionKind.DEAD, AttentionKind.RESTARTING})


@dataclass(frozen=True, slots=True)
class Change:
    item: AttentionItem
    what: str  # opened, updated, resolved, acked, snoozed, reopened


@dataclass(slots=True)
class _Item:
    id: str
    cond: Condition
    question: str | None
    state: ItemState = ItemState.OPEN
    acked_by: str | None = None
    snoozed_until: float | None = None
    resolved_at: float | None = None
    resolution: str | None = None

    def wire(self) -> AttentionItem:
        c = self.cond
        return AttentionItem(
            id=self.id,
            kind=c.kind,
            severity=c.severity,
            tenant=c.tenant,
            host=c.host,
            session=c.session,
            why=c.why,
            question=self.question,
            since=c.since,
            state=self.state,
            acked_by=self.acked_by,
            snoozed_until=self.snoozed_until,
            resolved_at=self.resolved_at,
            resolution=self.resolution,
            cause=c.cause,
            event_key=item_event_key(self.id),
        )


def item_event_key(item_id: str) -> str:
    return f"attention:{item_id}"


class UnknownItem(KeyError):
    pass


class AttentionQueue:
    def __init__(self, resolved_keep_s: float = 3600.0, wall: Callable[[], float] = time.time):
        self.resolved_keep_s = resolved_keep_s
        self.wall = wall
        self.items: dict[str, _Item] = {}
        self._active: dict[str, str] = {}  # condition key -> id, while not resolved
        self._by_host: dict[tuple[str, str], set[str]] = {}  # active host-derived items
        self._by_cause: dict[str, set[str]] = {}  # cause event key -> active items

    def __len__(self) -> int:
        return len(self._active)

    def open(self, cond: Condition) -> Change | None:
        active = self._active.get(cond.key)
        if active is not None:
            item = self.items[active]
            if cond.question and cond.question != item.question:
                item.question, item.cond = cond.question, cond
                return Change(item.wire(), "updated")
            if cond.kind in REFINED and cond.why != item.cond.why:
                # tmux may report a pane dead a pass before its exit status: say it once known
                item.cond = replace(cond, since=item.cond.since)
                return Change(item.wire(), "updated")
            return None
        item_id = hashlib.sha1(f"{cond.key}@{cond.since}".encode()).hexdigest()[:8]
        while item_id in self.items:  # the same condition again, from the same instant
            item_id = hashlib.sha1(item_id.encode()).hexdigest()[:8]
        item = self.items[item_id] = _Item(item_id, cond, cond.question)
        self._active[cond.key] = item_id
        if cond.kind in HOST_KINDS:
            self._by_host.setdefault((cond.tenant, cond.host), set()).add(item_id)
        if cond.cause:
            self._by_cause.setdefault(cond.cause, set()).add(item_id)
        return Change(item.wire(), "opened")

    def observe_host(
        self, tenant: str, host: str, conds: Iterable[Condition], why: str | None = None
    ) -> list[Change]:
        """A scan of one host: open what appeared, resolve what ended (``why``: one reason
        for all of them, else each kind's own)."""
        changes = []
        keys = set()
        for cond in conds:
            keys.add(cond.key)
            change = self.open(cond)
            if change:
                changes.append(change)
        for item_id in list(self._by_host.get((tenant, host), ())):
            item = self.items[item_id]
            if item.cond.key not in keys:
                changes.append(self.resolve(item_id, why or RESOLUTIONS[item.cond.kind]))
        return changes

    def resolve(self, item_id: str, reason: str) -> Change:
        item = self.items[item_id]
        item.state, item.resolved_at, item.resolution = ItemState.RESOLVED, self.wall(), reason
        item.snoozed_until = None
        cond = item.cond
        self._active.pop(cond.key, None)
        self._by_host.get((cond.tenant, cond.host), set()).discard(item_id)
        if cond.cause:
            self._by_cause.get(cond.cause, set()).discard(item_id)
        return Change(item.wire(), "resolved")

    def resolve_caused_by(self, targets: Iterable[str], by: str) -> list[Change]:
        """Resolve the items whose cause a later event resolves or supersedes."""
        return [
            self.resolve(item_id, f"resolved by {by}")
            for target in targets
            for item_id in list(self._by_cause.get(target, ()))
        ]

    def act(self, item_id: str, action: AttentionAction, snooze_s: float, by: str) -> Change:
        item = self.items.get(item_id)
        if item is None:
            raise UnknownItem(item_id)
        if item.state is ItemState.RESOLVED:
            return Change(item.wire(), "noop")
        if action is AttentionAction.ACK:
            item.state, item.acked_by, item.snoozed_until = ItemState.ACKED, by or "?", None
            return Change(item.wire(), "acked")
        item.state, item.snoozed_until = ItemState.SNOOZED, self.wall() + snooze_s
        return Change(item.wire(), "snoozed")

    def expire(self) -> list[Change]:
        """Snoozes that ended reopen their item; long-resolved items are forgotten."""
        now = self.wall()
        changes = []
        for item_id, item in list(self.items.items()):
            if item.state is ItemState.SNOOZED and (item.snoozed_until or 0) <= now:
                item.state, item.snoozed_until = ItemState.OPEN, None
                changes.append(Change(item.wire(), "reopened"))
            elif (
                item.state is ItemState.RESOLVED
                and now - (item.resolved_at or now) > self.resolved_keep_s
            ):
                del self.items[item_id]
        return changes

    def listing(
        self, tenant: str | None = None, host: str | None = None, include_all: bool = False
    ) -> list[AttentionItem]:
        """Open items (all of them with ``include_all``), most severe first, then newest."""
        picked = [
            item
            for item in self.items.values()
            if (include_all or item.state is ItemState.OPEN)
            and (tenant is None or item.cond.tenant == tenant)
            and (host is None or item.cond.host == host)
        ]
        picked.sort(key=lambda i: (-SEVERITY_RANK[i.cond.severity], -i.cond.since, i.id))
        return [item.wire() for item in picked]

    def open_count(self) -> int:
        return sum(1 for item in self.items.values() if item.state is ItemState.OPEN)
