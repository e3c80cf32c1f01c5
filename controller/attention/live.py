"""The fleet as it happens: real-time session states into fleet state, the attention queue
kept from states, transitions and events, and both pushed to live views (controller side of
`fleet ps` in real time, `fleet attention`, `fleet top`; docs/protocol.md). The queue's own
events, whichever replica recorded them, are applied to it too (attention/shared.py)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

import anyio
from nats.aio.msg import Msg

from controller.attention import shared
from controller.attention.feed import FeedRelay
from controller.attention.queue import AttentionQueue, Change, item_event_key
from controller.attention.rules import (
    AttentionConfig,
    Condition,
    blocked,
    ended_by,
    event_condition,
    host_conditions,
)
from controller.events.store.core import EventStore
from controller.events.system import Publish, system_event
from controller.fleet.intake import state_intake
from controller.fleet.state import FleetState, HostKey, Transition
from protocol.api import HostState
from protocol.attention import AttentionChanged, FeedEvent, HostDelta, SessionDelta
from protocol.events import Event, EventLink, LinkType, Severity, SourceKind
from protocol.heartbeat import SessionState

log = logging.getLogger(__name__)

# Our own events: never a cause of attention, whatever they say.
OWN_TYPES = ("attention.",)
MAX_EVENTS_PUSHED = 200  # per stored batch: a live pane shows the newest, not a flood
MAX_PENDING = 10_000  # attention events waiting to be recorded (a start-up storm's worth)


def event_flags(event: Event) -> list[str]:
    flags = []
    if event.attention_candidate:
        flags.append("attention")
    if event.operator_action_required:
        flags.append("action")
    if event.risk_detected:
        flags.append("risk")
    if event.severity in (Severity.WARNING, Severity.ERROR, Severity.CRITICAL):
        flags.append(event.severity.value)
    return flags


class LiveFleet:
    def __init__(
        self, state: FleetState, config: AttentionConfig, publish: Publish, feed: FeedRelay
    ) -> None:
        self.state = state
        self.config = config
        self.publish = publish
        self.feed = feed
        self.queue = AttentionQueue(config.resolved_keep_s, wall=state.wall)
        self._cursor = 0
        self._pending: deque[Event] = deque()  # the items' events, for run() to record
        self._wake = anyio.Event()

    # -- input ------------------------------------------------------------------------------
    async def on_state_message(self, msg: Msg) -> None:
        """The core subscription to every `session.state` event (subjects.all_session_states)."""
        news = state_intake(msg)
        if news is None:
            return
        snap = self.state.on_session_state(news)
        if snap is None:
            return
        await self.feed.push(
            SessionDelta(
                tenant=news.tenant,
                host=news.host,
                session=news.session,
                state=news.state.value,
                since=news.ts,
                rule=news.rule,
                line=news.line,
            ),
            news.tenant,
            news.host,
        )
        question = news.line if news.state is SessionState.BLOCKED else None
        await self._scan((news.tenant, news.host), {news.session: question} if question else {})

    async def on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        new = [e for e, i in zip(events, ids, strict=True) if i is not None]
        changes: list[Change] = []
        applied: list[Change] = []  # recorded already, by whichever replica made them
        for event in new:
            if event.event_type.startswith(OWN_TYPES):
                self._apply_own(event, applied)
                continue
            cond = event_condition(event)
            if cond is not None:
                change = self.queue.open(cond)
                if change:
                    changes.append(change)
            targets = ended_by(event)
            if targets:
                changes += self.queue.resolve_caused_by(targets, event.event_type)
        for event in new[-MAX_EVENTS_PUSHED:] if self.feed else ():
            await self.feed.push(
                FeedEvent(
                    tenant=event.tenant,
                    host=event.host,
                    session=event.session,
                    ts=event.ts,
                    event_type=event.event_type,
                    source_kind=event.source_kind.value,
                    summary=event.summary[:200],
                    flags=event_flags(event),
                ),
                event.tenant,
                event.host,
            )
        await self.changed(changes)
        await self.changed(applied, record=False)

    def _apply_own(self, event: Event, applied: list[Change]) -> None:
        """An `attention.*` event: another replica's ack or snooze (or this one's, back from
        the stream: a no-op), or its id for an item."""
        if event.source_kind is not SourceKind.SYSTEM:
            return  # not one a controller made (the broker keeps hosts from sending these)
        action = shared.action_of(event)
        change = self.queue.apply(action) if action is not None else None
        if change is not None:
            applied.append(change)
        named = shared.opened_of(event)
        if named is not None:
            self.queue.hear_opened(*named)

    async def restore(self, store: EventStore, tenants: Sequence[str]) -> int:
        """At startup, before any intake: items, acks and snoozes from the recorded events."""
        since = self.state.wall() - shared.RESTORE_S
        events = await anyio.to_thread.run_sync(shared.recent, store, tenants, since)
        return shared.restore(self.queue, events)

    async def on_transition(self, t: Transition) -> None:
        await self.feed.push(
            HostDelta(tenant=t.tenant, host=t.host, state=t.new.value, since=t.at),
            t.tenant,
            t.host,
        )
        await self._scan((t.tenant, t.host))

    async def tick(self) -> None:
        """Rescan a slice of the hosts (all of a small fleet), end snoozes, expire feeds."""
        keys = self.state.arrival_keys()  # any fixed order will do: no sort per tick
        n = min(len(keys), self.config.scan_hosts_per_tick)
        if self._cursor >= len(keys):
            self._cursor = 0
        picked = keys[self._cursor : self._cursor + n]
        self._cursor += n
        for key in picked:
            await self._scan(key)
        await self.changed(self.queue.expire())
        self.feed.expire()

    # -- output -----------------------------------------------------------------------------
    async def _scan(self, key: HostKey, questions: dict[str, str] | None = None) -> None:
        entry = self.state.hosts.get(key)
        if entry is None:
            return
        conds: list[Condition] = host_conditions(entry, self.state.wall(), self.config)
        if questions:
            snaps = {s.name: s for s in entry.sessions}
            conds = [
                blocked(c.tenant, c.host, snaps[c.session], questions[c.session], c.since)
                if c.session in questions and c.kind.value == "blocked"
                else c
                for c in conds
            ]
        why = "host stopped on purpose" if entry.state is HostState.STOPPED else None
        await self.changed(self.queue.observe_host(entry.tenant, entry.host, conds, why))

    async def changed(self, changes: list[Change], record: bool = True) -> None:
        for change in changes:
            item = change.item
            await self.feed.push(AttentionChanged(item=item), item.tenant, item.host)
            event = _item_event(change) if record else None
            if event is None:
                continue
            if len(self._pending) >= MAX_PENDING:
                log.warning("attention: event backlog full, %s not recorded", event.summary)
                continue
            self._pending.append(event)
            self._wake.set()

    async def run(self) -> None:
        """Records the items' events in the stream, off the paths that make them."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._pending:
                event = self._pending.popleft()
                try:
                    await self.publish(event)
                except Exception as exc:
                    log.warning("attention: cannot record %s: %s", event.idempotency_key, exc)


def _item_event(change: Change) -> Event | None:
    """The store's record of a change: `attention.opened` linked `caused_by` its cause, and
    `attention.resolved|acked|snoozed` linked `resolves` (or `caused_by`) to the item."""
    item = change.item
    key = item_event_key(item.id)
    if change.what == "opened":
        links = [EventLink(type=LinkType.CAUSED_BY, target=item.cause)] if item.cause else []
        summary = f"needs attention: {item.why}"
    elif change.what in ("resolved", "acked", "snoozed"):
        link = LinkType.RESOLVES if change.what == "resolved" else LinkType.CAUSED_BY
        links = [EventLink(type=link, target=key)]
        tail = item.resolution or item.acked_by or f"until {item.snoozed_until}"
        summary = f"{change.what}: {item.why} ({tail})"
        at = change.action.at if change.action is not None else 0  # each ack its own event
        key = f"{key}:{change.what}:{item.resolved_at or item.snoozed_until or at}"
    else:
        return None
    return system_event(
        item.tenant,
        item.host,
        item.session or "host",
        key,
        ts=time.time(),
        event_type=f"attention.{change.what}",
        summary=summary[:500],
        provenance="attention queue",
        payload={
            "item": item.id,
            "kind": item.kind.value,
            "question": item.question,
            **shared.payload(change),
        },
        tags=["attention", item.kind.value],
        severity=item.severity if change.what == "opened" else Severity.INFO,
        links=links,
    )
