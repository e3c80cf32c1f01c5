"""The controller daemon: `serve()` is startup → main_loop → shutdown.

Startup restores the last known fleet from SQLite, connects, subscribes to every tenant's
heartbeats and lifecycle notices, and opens the API. Shutdown stops intake first, then
persists, then closes the connections and the databases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial

import anyio
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.daemon import run_daemon
from common.signals import ExitFlags
from controller.api.commands import CommandRouter
from controller.api.reports import external_counters, session_runtime
from controller.api.routes import controller_api
from controller.api.watch_relay import WatchRelay
from controller.config import ControllerConfig
from controller.connections import Connections
from controller.events.ingest import Ingest
from controller.events.store.core import EventStore
from controller.events.synthesis.runner import SynthesisRunner
from controller.fleet.intake import intake
from controller.fleet.latest import Latest
from controller.fleet.persister import Persister
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState, HostKey, Transition
from controller.fleet.statedb import StateDB
from controller.fleet.translog import HostChangeLog
from controller.reports.metrics import FleetMetrics, serve_metrics
from protocol import subjects
from protocol.events import Event
from protocol.heartbeat import Heartbeat
from protocol.lifecycle import Lifecycle

log = logging.getLogger(__name__)

SHUTDOWN_STEP_S = 5.0


class Controller:
    def __init__(self, config: ControllerConfig, *, flags: ExitFlags | None = None) -> None:
        self.config = config
        self.flags = flags or ExitFlags()
        self.conns = Connections(config)
        self.state = FleetState(grace_s=config.restart_grace_s)
        self.heartbeats = Latest()  # parked, newest per host, until the loop takes them
        self.changes = HostChangeLog(log)
        self.db = StateDB(config.data_path / "fleet.db")
        self.persister = Persister(self.db, config.persist_interval_s)
        self.store = EventStore(config.data_path / "events.db")
        self.metrics = FleetMetrics(
            runtime_of=partial(session_runtime, self.state),
            external=partial(external_counters, self.state, self.store),
        )
        self.ingest_lock = anyio.Lock()  # a store rebuild pauses ingest
        self.ingest = Ingest(
            self.store, list(config.tenants), config.streams, self._on_stored, self.state.counters
        )
        self.rejects = Rejects(self.state.counters, self.conns.publish_event)
        self.synthesis = SynthesisRunner(self.store, config.synthesis, self.conns.publish_event)
        relay = WatchRelay(self.conns.tenant, self.conns.api)
        self.commands = CommandRouter(
            self.state, self.conns.tenant, relay, self.metrics.observe_round_trip
        )
        self.api = controller_api(
            config,
            state=self.state,
            heartbeats=self.heartbeats,
            store=self.store,
            db=self.db,
            metrics=self.metrics,
            commands=self.commands,
            conns=self.conns,
            ingest_lock=self.ingest_lock,
        )
        self._subs: list[Subscription] = []

    # -- life -------------------------------------------------------------------------------
    async def serve(self, install_signal_handlers: bool = True) -> None:
        await run_daemon(
            self.flags,
            self.startup,
            self.main_loop,
            self.shutdown,
            install_signal_handlers=install_signal_handlers,
        )

    async def startup(self) -> None:
        self.db.open()
        restored = self.db.load_hosts()
        self.state.restore(restored)
        await anyio.to_thread.run_sync(self.store.open)
        nc = await self.conns.open()
        await self.ingest.setup(self.conns.jetstreams())
        await self.synthesis.warm()
        for tenant, tnc in self.conns.by_tenant.items():
            self._subs += [
                await tnc.subscribe(subjects.all_heartbeats(tenant), cb=self.heartbeats.park),
                await tnc.subscribe(subjects.all_lifecycles(tenant), cb=self._on_lifecycle),
            ]
            await tnc.flush()
        await self.api.start(nc)
        await nc.flush()
        log.info(
            "controller up: tenants %s, %d hosts restored, API on %s",
            ",".join(self.config.tenants),
            len(restored),
            subjects.controller_api_all(),
        )

    async def main_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            if self.config.metrics_addr:
                # Bound before anything else runs: a port in use fails the start loudly.
                await tg.start(serve_metrics, self.metrics, self.config.metrics_addr)
            tg.start_soon(self.heartbeats.run, self._on_heartbeat)
            tg.start_soon(self._liveness_loop)
            tg.start_soon(self.persister.run, lambda: self.state)
            tg.start_soon(self.ingest.run, dict(self.conns.by_tenant), self.ingest_lock)
            await self.flags.should_exit.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        with anyio.move_on_after(SHUTDOWN_STEP_S):
            await self.api.stop()
            await self.commands.relay.close()
            for sub in self._subs:
                await sub.unsubscribe()
        self._subs.clear()
        self.changes.flush()
        if self.db.is_open:
            self.persister.persist(self.state, everything=True)
        await self.conns.close(SHUTDOWN_STEP_S)
        self.db.close()
        self.store.close()
        log.info("controller stopped")

    # -- intake -----------------------------------------------------------------------------
    async def _on_heartbeat(self, msg: Msg) -> None:
        hb = await intake(msg, subjects.Kind.HB, Heartbeat, self.rejects)
        if hb is None:
            return
        self.metrics.observe_heartbeat(time.time() - hb.sent_at)
        self._record(self.state.on_heartbeat(hb))
        made = self.synthesis.on_heartbeat(hb)
        if made:
            await self.synthesis.emit(made)

    async def _on_lifecycle(self, msg: Msg) -> None:
        lc = await intake(msg, subjects.Kind.LC, Lifecycle, self.rejects)
        if lc is None:
            return
        self.changes.notice(lc)
        self._record(self.state.on_lifecycle(lc))

    def _record(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self.metrics.observe_transition(transition)
        self.persister.record(transition)
        self.changes.transition(transition)

    async def _on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        # Each newly stored event is counted once, in the order stored, before synthesis.
        try:
            self.metrics.observe_stored(events, ids)
        except Exception:  # counting must never stop ingest
            log.exception("metrics: counting stored events failed")
        await self.synthesis.on_stored(events, ids)

    # -- loops ------------------------------------------------------------------------------
    async def _liveness_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.liveness_tick_s)
            for transition in self.state.tick(self._heartbeat_waiting):
                self._record(transition)
            self.changes.flush()
            await self.commands.relay.expire()
            await self.synthesis.tick()

    def _heartbeat_waiting(self, key: HostKey) -> bool:
        return self.heartbeats.holds(subjects.heartbeat(*key))
