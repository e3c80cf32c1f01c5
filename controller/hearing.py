"""What the controller does with what it hears: heartbeats (taken from the parking, keepalives
expanded), lifecycle notices, newly stored events, and the liveness tick that judges the
hosts it has not heard from. Each host transition is counted, persisted, logged and handed
to the attention queue in one place, `record`.

Subscribed by `listen` at the daemon's startup; `on_heartbeat` and `liveness_loop` run as
tasks of its main loop; the ingest calls `on_stored` (controller/parts.py wires it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from controller.api.watch_relay import WatchRelay
from controller.attention.live import LiveFleet
from controller.events.synthesis.runner import SynthesisRunner
from controller.fleet.intake import intake
from controller.fleet.keepalive import Keepalives
from controller.fleet.latest import Latest
from controller.fleet.liveness import Behind
from controller.fleet.persister import Persister
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState, HostKey, Transition
from controller.fleet.translog import HostChangeLog
from controller.reactions.runner import Reactions
from controller.reports.metrics import FleetMetrics
from protocol import subjects
from protocol.events import Event
from protocol.heartbeat import Keepalive
from protocol.lifecycle import Lifecycle

log = logging.getLogger(__name__)


@dataclass
class Hearing:
    state: FleetState
    parked: Latest  # heartbeats, newest per host, until `on_heartbeat` takes them
    keepalives: Keepalives
    rejects: Rejects
    metrics: FleetMetrics
    persister: Persister
    changes: HostChangeLog
    live: LiveFleet
    synthesis: SynthesisRunner
    reactions: Reactions
    relay: WatchRelay  # watch relays expire on the liveness tick
    tick_s: float  # the liveness tick
    behind: Behind = field(default_factory=Behind)  # how far behind its heartbeats it runs

    async def listen(self, by_tenant: Mapping[str, Client], subs: list[Subscription]) -> None:
        """Every tenant's heartbeats, lifecycle notices and real-time session states, each
        subscription added to ``subs`` as it is made (so a failure leaves none unknown)."""
        for tenant, tnc in by_tenant.items():
            subs += [
                await tnc.subscribe(subjects.all_heartbeats(tenant), cb=self.parked.park),
                await tnc.subscribe(subjects.all_lifecycles(tenant), cb=self.on_lifecycle),
                await tnc.subscribe(
                    subjects.all_session_states(tenant), cb=self.live.on_state_message
                ),
            ]
            await tnc.flush()

    async def on_heartbeat(self, msg: Msg) -> None:
        beat = await self.keepalives.intake(msg)
        if beat is None:
            return
        lag = time.time() - beat.sent_at
        self.metrics.observe_heartbeat(lag)
        self.behind.observe((beat.tenant, beat.host), lag)
        if isinstance(beat, Keepalive):
            transition = self.state.on_keepalive(beat)
            entry = self.state.hosts.get((beat.tenant, beat.host))
            # Only a host with a working session can go stale with no news at all.
            made = self.synthesis.on_keepalive(entry) if entry is not None else []
        else:
            transition = self.state.on_heartbeat(beat)
            made = self.synthesis.on_heartbeat(beat)
        if transition is not None:  # rare: no coroutine for the 10,000 a second that are not
            await self.record(transition)
        if made:
            await self.synthesis.emit(made)

    async def on_lifecycle(self, msg: Msg) -> None:
        lc = await intake(msg, subjects.Kind.LC, Lifecycle, self.rejects)
        if lc is None:
            return
        self.changes.notice(lc)
        await self.record(self.state.on_lifecycle(lc))

    async def record(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self.metrics.observe_transition(transition)
        self.persister.record(transition)
        self.changes.transition(transition)
        await self.live.on_transition(transition)

    async def on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        # Each newly stored event is counted once, in the order stored, before synthesis.
        try:
            self.metrics.observe_stored(events, ids)
        except Exception:  # counting must never stop ingest
            log.exception("metrics: counting stored events failed")
        await self.synthesis.on_stored(events, ids)
        try:
            await self.live.on_stored(events, ids)
            await self.reactions.on_stored(events, ids)
        except Exception:  # the attention queue and reactions must never stop ingest
            log.exception("attention/reactions: stored events failed")

    async def liveness_loop(self) -> None:
        while True:
            await anyio.sleep(self.tick_s)
            for transition in self.state.tick(self.heartbeat_waiting, self.behind.take()):
                await self.record(transition)
            self.changes.flush()
            await self.relay.expire()
            await self.synthesis.tick()
            await self.live.tick()

    def heartbeat_waiting(self, key: HostKey) -> bool:
        # A host whose heartbeat is parked, not yet processed, is not judged on this tick.
        return self.parked.holds(subjects.heartbeat(*key))
