"""Runs the synthesis engine inside the controller: feeds it stored events, heartbeats and
ticks; publishes what it synthesizes into the tenant's stream (so the stream stays the whole
log and a rebuild reproduces it); applies its `supersedes` links to the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import anyio

from controller.events.store.core import EventStore
from controller.events.synthesis.engine import LinkRequest, SynthesisConfig, Synthesizer
from controller.events.system import Publish
from controller.fleet.state import HostEntry
from protocol.events import Event
from protocol.events_api import stored_as_event
from protocol.heartbeat import Heartbeat, SessionSnapshot, SessionState

log = logging.getLogger(__name__)

_WORKING = SessionState.WORKING
_NONE: frozenset[str] = frozenset()

WARM_WINDOW_S = 15 * 60
WARM_LIMIT = 10_000


class SynthesisRunner:
    def __init__(self, store: EventStore, config: SynthesisConfig, publish: Publish) -> None:
        self.store = store
        self.engine = Synthesizer(config)
        self.publish = publish
        # Per (tenant, host): the sessions last seen working.
        self._working: dict[tuple[str, str], set[str]] = {}
        # Per (tenant, host): when its first working session could go stale (keepalives).
        self._due: dict[tuple[str, str], float] = {}

    async def warm(self) -> None:
        """Replay the recent past, so a restart neither forgets an open grace period nor
        synthesizes twice (the engine recognises its own stored events)."""
        since = time.time() - WARM_WINDOW_S
        recent = await anyio.to_thread.run_sync(
            lambda: self.store.search(None, since=since, limit=WARM_LIMIT, order="asc")
        )
        for stored in recent:
            event = stored_as_event(stored)
            made, links = self.engine.on_event(event)
            await self._out(made, links)

    async def on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        for event, row in zip(events, ids, strict=True):
            if row is None:
                continue  # a duplicate: the engine has seen it already
            made, links = self.engine.on_event(event)
            if made or links:  # nearly never: no await per stored event
                await self._out(made, links)

    def on_heartbeat(self, hb: Heartbeat) -> list[Event]:
        """What the stale rule makes of a heartbeat (nearly always nothing); publish it with
        ``emit``. Runs for every heartbeat, so only a working session silent for a while, or
        the first snapshot after one stopped working, reaches the engine. Comprehensions, not
        a loop of statements per session: 4.3 µs per heartbeat of 10 sessions instead of 5.3
        (docs/benchmarks.md, *Ids checked at once*)."""
        return self._sessions(hb.tenant, hb.host, hb.sessions)

    def on_keepalive(self, entry: HostEntry) -> list[Event]:
        """A keepalive: the held sessions again. Nothing to look at before the first working
        session's silence could pass stale_after (a session that stopped working comes with a
        full snapshot); that skip is most of what a keepalive saves over a heartbeat."""
        due = self._due.get((entry.tenant, entry.host))
        if due is None or time.time() <= due:
            return []
        return self._sessions(entry.tenant, entry.host, entry.sessions)

    def _sessions(self, tenant: str, host: str, sessions: list[SessionSnapshot]) -> list[Event]:
        now = time.time()
        stale_after = self.engine.config.stale_after_s
        key = (tenant, host)
        was = self._working.get(key) or _NONE
        hits = [
            s
            for s in sessions
            if (
                s.state is _WORKING
                # silent longer than stale_after since the later of last output and entering
                # working; with neither known there is no clock to measure silence against
                and (s.last_output_at is not None or s.state_since is not None)
                and now - (s.last_output_at or 0.0) > stale_after
                and now - (s.state_since or 0.0) > stale_after
            )
            or (s.state is not _WORKING and s.name in was)
        ]
        working = [s for s in sessions if s.state is _WORKING]
        if working:
            self._working.setdefault(key, set()).update(s.name for s in working)
        # The stale test above is now > max(output, since) + stale_after: when it can first hold.
        clocks = [
            max(s.last_output_at or 0.0, s.state_since or 0.0)
            for s in working
            if s.last_output_at is not None or s.state_since is not None
        ]
        if clocks:
            self._due[key] = min(clocks) + stale_after
        else:
            self._due.pop(key, None)
        made: list[Event] = []
        for snap in hits:
            if snap.state is not _WORKING:
                self._working[key].discard(snap.name)
            made += self.engine.on_snapshot(tenant, host, snap, now)
        return made

    async def emit(self, made: list[Event]) -> None:
        await self._out(made, [])

    async def tick(self) -> None:
        await self._out(self.engine.tick(time.time()), [])

    async def _out(self, made: list[Event], links: list[LinkRequest]) -> None:
        for event in made:
            key = event.idempotency_key or ""
            try:
                await self.publish(event)
            except Exception as exc:
                log.warning("cannot publish synthesized %s: %s", key, exc)
        if links:
            await anyio.to_thread.run_sync(apply_links, self.store, links)


def apply_links(store: EventStore, links: Sequence[LinkRequest]) -> int:
    made = 0
    for req in links:
        # The target is ours, its key names its session; the source is the real event of
        # that session (an agent's key is unique only within its session).
        target = store.find_by_key(req.to_key)
        source = (
            None
            if target is None
            else store.find_by_key(req.from_key, target.tenant, target.host, target.session)
        )
        if source is None or target is None:
            log.debug("link %s -> %s: an end is not stored yet", req.from_key, req.to_key)
            continue
        made += store.link(source.id, target.id, req.type, created_by=source.id)
    return made


def relink(store: EventStore, events: Sequence[Event], config: SynthesisConfig) -> int:
    """After a rebuild: the links synthesis made are derived again from the same events."""
    engine = Synthesizer(config)
    links: list[LinkRequest] = []
    for event in events:
        links += engine.on_event(event)[1]
    return apply_links(store, links)
