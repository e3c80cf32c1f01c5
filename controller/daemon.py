"""The controller daemon: `serve()` is startup → main_loop → shutdown.

Startup restores the last known fleet from SQLite, connects, subscribes to every tenant's
heartbeats and lifecycle notices, and opens the API. Shutdown stops intake first, then
persists, then closes the connection and the database.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from common import natsconn
from common.signals import ExitFlags, watch_signals
from common.version import VERSION
from controller.api import reports as report_api
from controller.api.commands import CommandRouter
from controller.api.events import EventsApi
from controller.api.service import ApiService
from controller.api.views import ps_page
from controller.api.watch_relay import WatchRelay
from controller.config import ControllerConfig
from controller.events.ingest import Ingest, replay
from controller.events.store.core import EventStore
from controller.events.synthesis.runner import SynthesisRunner, relink
from controller.fleet.intake import intake
from controller.fleet.latest import Latest
from controller.fleet.persister import Persister
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState, HostKey, Transition, percentiles
from controller.fleet.statedb import StateDB
from controller.fleet.translog import HostChangeLog
from controller.reports.metrics import serve_metrics
from protocol import subjects
from protocol.api import PsReply, PsRequest, StatusReply, StatusRequest
from protocol.commands import CommandRequest
from protocol.events import Event
from protocol.events_api import (
    EventLinkRequest,
    EventShowRequest,
    EventsSearchRequest,
    EventsTailRequest,
    RebuildRequest,
)
from protocol.heartbeat import Heartbeat
from protocol.lifecycle import Lifecycle

log = logging.getLogger(__name__)

SHUTDOWN_STEP_S = 5.0


class Controller:
    def __init__(self, config: ControllerConfig, *, flags: ExitFlags | None = None) -> None:
        self.config = config
        self.flags = flags or ExitFlags()
        self.state = FleetState(grace_s=config.restart_grace_s)
        self.nc: Client | None = None  # the API connection
        self.tenant_nc: dict[str, Client] = {}  # one per tenant account (or self.nc for all)
        self.db = StateDB(config.data_path / "fleet.db")
        self.persister = Persister(self.db, config.persist_interval_s)
        self.api = ApiService(config.api_queue)
        self.api.route("ps", PsRequest, self._ps)
        self.api.route("status", StatusRequest, self._status)
        self.store = EventStore(config.data_path / "events.db")
        self.ingest_lock = anyio.Lock()
        self.ingest = Ingest(
            self.store,
            list(config.tenants),
            config.streams,
            on_stored=self._on_stored,
            counters=self.state.counters,
        )
        self.rejects = Rejects(self.state.counters, self._publish_event)
        self.synthesis = SynthesisRunner(self.store, config.synthesis, self._publish_event)
        self.events = EventsApi(
            self.store,
            self._replay_all,
            self.ingest_lock,
            lambda evs: relink(self.store, evs, config.synthesis),
        )
        self.api.route("events.search", EventsSearchRequest, self.events.search)
        self.api.route("events.tail", EventsTailRequest, self.events.tail)
        self.api.route("events.show", EventShowRequest, self.events.show)
        self.api.route("events.link", EventLinkRequest, self.events.link)
        self.api.route("store.rebuild", RebuildRequest, self.events.rebuild)
        self.commands = CommandRouter(self.state, self.tenant_nc.get)
        self.commands.relay = WatchRelay(self.tenant_nc.get, lambda: self.nc)
        self.api.route("cmd", CommandRequest, self.commands.handle)
        report_api.register(self)
        self.started_at = time.time()
        self._subs: list[Subscription] = []
        self.changes = HostChangeLog(log)
        self.heartbeats = Latest()

    # -- life -------------------------------------------------------------------------------
    async def serve(self, install_signal_handlers: bool = True) -> None:
        async with anyio.create_task_group() as tg:
            if install_signal_handlers:
                tg.start_soon(watch_signals, self.flags)
            with anyio.CancelScope() as scope:
                self.flags.scope = scope
                await self._until_exit_requested(self.startup)
                try:
                    await self.main_loop()
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.shutdown()
            tg.cancel_scope.cancel()

    async def _until_exit_requested(self, step: Callable[[], Awaitable[None]]) -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await self.flags.should_exit.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await step()
            tg.cancel_scope.cancel()

    async def startup(self) -> None:
        self.db.open()
        restored = self.db.load_hosts()
        self.state = FleetState(grace_s=self.config.restart_grace_s)
        self.state.restore(restored)
        self.commands.state = self.state
        self.rejects.counters = self.state.counters
        self.ingest.counters = self.state.counters
        await anyio.to_thread.run_sync(self.store.open)
        self.nc = await natsconn.connect(self.config.nats, name="fleet-controller")
        for tenant in self.config.tenants:
            own = self.config.tenant_nats.get(tenant)
            self.tenant_nc[tenant] = (
                await natsconn.connect(own, name=f"fleet-controller {tenant}") if own else self.nc
            )
        await self.ingest.setup(self._jetstreams())
        await self.synthesis.warm()
        for tenant, nc in self.tenant_nc.items():
            self._subs.append(
                await nc.subscribe(subjects.all_heartbeats(tenant), cb=self.heartbeats.park)
            )
            self._subs.append(
                await nc.subscribe(subjects.all_lifecycles(tenant), cb=self._on_lifecycle)
            )
            await nc.flush()
        await self.api.start(self.nc)
        await self.nc.flush()
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
            tg.start_soon(self.ingest.run, dict(self.tenant_nc), self.ingest_lock)
            await self.flags.should_exit.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        with anyio.move_on_after(SHUTDOWN_STEP_S):
            await self.api.stop()
            if self.commands.relay is not None:
                await self.commands.relay.close()
            for sub in self._subs:
                await sub.unsubscribe()
        self._subs.clear()
        self.changes.flush()
        if self.db.is_open:
            self.persister.persist(self.state, everything=True)
        nc, self.nc = self.nc, None
        own = [c for c in self.tenant_nc.values() if c is not nc]
        self.tenant_nc.clear()
        for conn in [*own, nc]:
            if conn is not None:
                with anyio.move_on_after(SHUTDOWN_STEP_S):
                    await conn.close()
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

    # -- loops ------------------------------------------------------------------------------
    async def _liveness_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.liveness_tick_s)
            for transition in self.state.tick(self._heartbeat_waiting):
                self._record(transition)
            self.changes.flush()
            if self.commands.relay is not None:
                await self.commands.relay.expire()
            await self.synthesis.tick()

    def _heartbeat_waiting(self, key: HostKey) -> bool:
        return self.heartbeats.holds(subjects.heartbeat(*key))

    # -- events -----------------------------------------------------------------------------
    async def _on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        await self.synthesis.on_stored(events, ids)

    def _jetstreams(self) -> dict[str, JetStreamContext]:
        return {tenant: nc.jetstream() for tenant, nc in self.tenant_nc.items()}

    async def _publish_event(self, subject: str, data: bytes, msg_id: str) -> None:
        nc = self.tenant_nc.get(subjects.parse(subject).tenant)
        if nc is None:
            raise RuntimeError("not connected")
        await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id})

    async def _replay_all(self) -> tuple[list[Event], list[float]]:
        assert self.nc is not None
        events: list[Event] = []
        stamps: list[float] = []
        for tenant in self.config.tenants:
            got, at = await replay(self.tenant_nc[tenant].jetstream(), tenant)
            events += got
            stamps += at
        return events, stamps

    # -- API --------------------------------------------------------------------------------
    async def _ps(self, req: PsRequest) -> PsReply:
        return ps_page(self.state, req, self.config.page_limit)

    def _latencies(self) -> dict[str, float]:
        lag50, lag99 = percentiles(self.state.lags, 50, 99)
        rtt50, rtt99 = percentiles(self.commands.round_trips_ms, 50, 99)
        return {
            "heartbeat_lag_p50": round(lag50 * 1000, 2),
            "heartbeat_lag_p99": round(lag99 * 1000, 2),
            "command_round_trip_p50": round(rtt50, 2),
            "command_round_trip_p99": round(rtt99, 2),
        }

    async def _status(self, _req: StatusRequest) -> StatusReply:
        return StatusReply(
            controller_version=VERSION,
            started_at=self.started_at,
            tenants=list(self.config.tenants),
            hosts=len(self.state.hosts),
            counters={
                **self.state.counters,
                "heartbeats_superseded": self.heartbeats.superseded,
                "heartbeats_waiting": len(self.heartbeats),
                # A full collection stops the loop (0.2 s over 50,000 hosts' state, in-process).
                "gc_full_collections": gc.get_stats()[2]["collections"],
                "sequence_gaps": self.store.total_gaps(),
            },
            latencies_ms=self._latencies(),
        )
