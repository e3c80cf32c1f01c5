"""The attention queue: one item per condition while it lasts, newest and most severe first.

An item opens when its condition appears (controller/attention/rules.py), can be acked (seen;
it stays until the condition ends) or snoozed (hidden until a time, then open again), and
resolves itself when the condition ends, saying why. Every change comes back as a ``Change``
for the caller to record as an event and push to live views.

Replicas (controller/attention/shared.py): an ack or snooze recorded by another replica, or by
this one before a restart, comes back as an ``Action`` to ``apply``: the latest by its time
wins, so applying one twice, or out of order, changes nothing. One for an item not held here
yet is remembered a while and applied when the item opens (controller/attention/heard.py);
another replica's id for an item this one holds under its own is an alias of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from controller.attention.heard import Action, Heard, Hearsay, Order, near
from controller.attention.rules import HOST_KINDS, RESOLUTIONS, SEVERITY_RANK, Condition
from protocol.attention import AttentionAction, AttentionItem, AttentionKind, ItemState

# Kinds whose text may become more precise while the condition holds (a dead pane's exit
# status arrives a pass after it is seen dead); others keep the text they opened with.
REFINED = frozenset({AttentionKind.DEAD, AttentionKind.RESTARTING})


@dataclass(frozen=True, slots=True)
class Change:
    item: AttentionItem
    what: str  # opened, updated, resolved, acked, snoozed, reopened, noop
    cond: Condition | None = None  # the item's condition, for its event
    action: Action | None = None  # the ack or snooze that made it


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
    acted: Order = (0.0, "", "", 0.0)  # the latest action's, by time

    def change(self, what: str, action: Action | None = None) -> Change:
        return Change(self.wire(), what, self.cond, action)

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
        self.heard = Hearsay()  # what other replicas said of items not opened here yet
        self._alias: dict[str, str] = {}  # another replica's id -> ours, for one condition

    def __len__(self) -> int:
        return len(self._active)

    def open(self, cond: Condition) -> Change | None:
        active = self._active.get(cond.key)
        if active is not None:
            item = self.items[active]
            if cond.question and cond.question != item.question:
                item.question, item.cond = cond.question, cond
                return item.change("updated")
            if cond.kind in REFINED and cond.why != item.cond.why:
                # tmux may report a pane dead a pass before its exit status: say it once known
                item.cond = replace(cond, since=item.cond.since)
                return item.change("updated")
            return None
        item_id = hashlib.sha1(f"{cond.key}@{cond.since}".encode()).hexdigest()[:8]
        while item_id in self.items:  # the same condition again, from the same instant
            item_id = hashlib.sha1(item_id.encode()).hexdigest()[:8]
        heard = self.heard.take(item_id, cond.key, cond.since, self.items.__contains__)
        if heard is not None:  # another replica opened it first: its id, its ack
            item_id = heard.item_id
        item = self.items[item_id] = _Item(item_id, cond, cond.question)
        if heard is not None and heard.action is not None:
            self._apply(item, heard.action)
        self._active[cond.key] = item_id
        if cond.kind in HOST_KINDS:
            self._by_host.setdefault((cond.tenant, cond.host), set()).add(item_id)
        if cond.cause:
            self._by_cause.setdefault(cond.cause, set()).add(item_id)
        return item.change("opened")

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
        return item.change("resolved")

    def resolve_caused_by(self, targets: Iterable[str], by: str) -> list[Change]:
        """Resolve the items whose cause a later event resolves or supersedes."""
        return [
            self.resolve(item_id, f"resolved by {by}")
            for target in targets
            for item_id in list(self._by_cause.get(target, ()))
        ]

    def find(self, item_id: str) -> _Item | None:
        """The item by its id, or by the id another replica gave it."""
        return self.items.get(item_id) or self.items.get(self._alias.get(item_id, ""))

    def act(self, item_id: str, action: AttentionAction, snooze_s: float, by: str) -> Change:
        item = self.find(item_id)
        if item is None:
            raise UnknownItem(item_id)
        if item.state is ItemState.RESOLVED:
            return item.change("noop")
        # Later than any action this item has had, whatever the clocks: it wins everywhere.
        now = max(self.wall(), item.acted[0] + 0.001)
        what = "acked" if action is AttentionAction.ACK else "snoozed"
        until = now + snooze_s if what == "snoozed" else None
        done = Action(item.id, what, now, by or "?", until, item.cond.key, item.cond.since)
        self._apply(item, done)
        return item.change(what, done)

    def apply(self, action: Action) -> Change | None:
        """An ack or snooze recorded in the stream (by any replica, this one included): the
        change it makes here, None if none (already applied, older than what this item had,
        or an item not held yet: remembered for when it opens)."""
        item = self._holder(action.item_id, action.key, action.since)
        if item is None:
            self.heard.hear(Heard(action.item_id, action.key, action.since, action, self.wall()))
            return None
        return item.change(action.what, action) if self._apply(item, action) else None

    def hear_opened(self, item_id: str, key: str, since: float) -> None:
        """Another replica's (or an earlier run's) `attention.opened`: its id for the item."""
        if self._holder(item_id, key, since) is None:
            self.heard.hear(Heard(item_id, key, since, None, self.wall()))

    def _holder(self, item_id: str, key: str | None, since: float | None) -> _Item | None:
        item = self.find(item_id)
        if item is None and key is not None:
            active = self._active.get(key)
            if active is not None and near(self.items[active].cond.since, since):
                self._alias[item_id] = active
                item = self.items[active]
        return item

    @staticmethod
    def _apply(item: _Item, action: Action) -> bool:
        if item.state is ItemState.RESOLVED or action.order() <= item.acted:
            return False
        item.acted = action.order()
        if action.what == "acked":
            item.state, item.acked_by, item.snoozed_until = ItemState.ACKED, action.by, None
        else:
            item.state, item.snoozed_until = ItemState.SNOOZED, action.until
        return True

    def expire(self) -> list[Change]:
        """Snoozes that ended reopen their item; long-resolved items are forgotten."""
        now = self.wall()
        changes = []
        self.heard.expire(now)
        forgot = len(self.items)
        for item_id, item in list(self.items.items()):
            if item.state is ItemState.SNOOZED and (item.snoozed_until or 0) <= now:
                item.state, item.snoozed_until = ItemState.OPEN, None
                changes.append(item.change("reopened"))
            elif (
                item.state is ItemState.RESOLVED
                and now - (item.resolved_at or now) > self.resolved_keep_s
            ):
                del self.items[item_id]
        if len(self.items) < forgot and self._alias:
            self._alias = {a: i for a, i in self._alias.items() if i in self.items}
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
