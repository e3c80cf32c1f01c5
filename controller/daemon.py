"""The controller daemon: `serve()` is startup → main_loop → shutdown.

Startup restores the last known fleet from SQLite, connects, subscribes to every tenant's
heartbeats and lifecycle notices, and opens the API. Shutdown stops intake first, then
persists, then closes the connection and the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from agent import natsconn
from agent.signals import ExitFlags, watch_signals
from agent.version import VERSION
from controller import report_api
from controller.commands import CommandRouter
from controller.config import ControllerConfig
from controller.events_api import EventsApi
from controller.ingest import Ingest, replay
from controller.latest import Latest
from controller.metrics import serve_metrics
from controller.rejects import Rejects
from controller.service import ApiService
from controller.state import FleetState, HostEntry, Transition, percentiles
from controller.statedb import StateDB
from controller.store import EventStore
from controller.synth_runner import SynthesisRunner, relink
from controller.translog import HostChangeLog
from controller.views import ps_page
from controller.watch_relay import WatchRelay
from protocol import DecodeError, decode, subjects
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
from protocol.limits import PAYLOAD_LIMITS
from protocol.subjects import SubjectError

log = logging.getLogger(__name__)

# Each host's full snapshot is written at least this often; state changes are written at once.
SNAPSHOT_PERSIST_S = 60.0
SHUTDOWN_STEP_S = 5.0


M = TypeVar("M", Heartbeat, Lifecycle)


def _mismatch(subject: str, tenant: str, host: str) -> str:
    try:
        where = subjects.parse(subject)
    except SubjectError as exc:
        return str(exc)
    return f"body says {tenant}/{host} but the subject {where.tenant}/{where.host}"


class Controller:
    def __init__(self, config: ControllerConfig, *, flags: ExitFlags | None = None) -> None:
        self.config = config
        self.flags = flags or ExitFlags()
        self.state = FleetState(grace_s=config.restart_grace_s)
        self.nc: Client | None = None  # the API connection
        self.tenant_nc: dict[str, Client] = {}  # one per tenant account (or self.nc for all)
        self.db = StateDB(config.data_path / "fleet.db")
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
        self._pending_transitions: list[Transition] = []
        self.changes = HostChangeLog(log)
        self.heartbeats = Latest()
        self._roll = 0

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
            tg.start_soon(self._persist_loop)
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
            self._persist(everything=True)
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
        hb = await self._intake(msg, subjects.Kind.HB, Heartbeat)
        if hb is None:
            return
        self.metrics.observe_heartbeat(time.time() - hb.sent_at)
        self._record(self.state.on_heartbeat(hb))
        made = self.synthesis.on_heartbeat(hb)
        if made:
            await self.synthesis.emit(made)

    async def _on_lifecycle(self, msg: Msg) -> None:
        lc = await self._intake(msg, subjects.Kind.LC, Lifecycle)
        if lc is None:
            return
        self.changes.notice(lc)
        self._record(self.state.on_lifecycle(lc))

    async def _intake(self, msg: Msg, kind: subjects.Kind, message: type[M]) -> M | None:
        """The heartbeat or notice in ``msg``, if it is valid and its subject names the host
        its body names; otherwise refused (counted, logged, an event) and None.

        Decoded first and the subject compared after: the cheap order for the message that
        arrives 10,000 times a second; ``parse`` only explains a mismatch.
        """
        data, reason = msg.data, ""
        if len(data) > PAYLOAD_LIMITS[kind]:
            reason = f"{len(data)} bytes, over the limit"
        else:
            try:
                body = decode(data, message)
            except DecodeError as exc:
                reason = str(exc)
            else:
                if subjects.names_host(msg.subject, kind, body.tenant, body.host):
                    return body
                reason = _mismatch(msg.subject, body.tenant, body.host)
        await self.rejects.reject(msg.subject, data, kind.value, reason)
        return None

    def _record(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self.metrics.observe_transition(transition)
        self._pending_transitions.append(transition)
        self.changes.transition(transition)

    # -- loops ------------------------------------------------------------------------------
    async def _liveness_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.liveness_tick_s)
            for transition in self.state.tick():
                self._record(transition)
            self.changes.flush()
            if self.commands.relay is not None:
                await self.commands.relay.expire()
            await self.synthesis.tick()

    async def _persist_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.persist_interval_s)
            try:
                await anyio.to_thread.run_sync(self._persist)
            except Exception:
                log.exception("persisting fleet state failed")

    def _persist(self, everything: bool = False) -> None:
        # Runs in a worker thread: it reads entries the loop may replace fields of, which is
        # safe under the GIL (fields are reassigned, never mutated in place).
        state = self.state
        keys, state.dirty = state.dirty, set()
        ordered = list(state.sorted_keys())
        if everything:
            keys.update(ordered)
        elif ordered:
            # A rolling slice, so every host's snapshot is rewritten every SNAPSHOT_PERSIST_S.
            share = len(ordered) * self.config.persist_interval_s / SNAPSHOT_PERSIST_S
            count = max(1, int(share))
            for _ in range(min(count, len(ordered))):
                keys.add(ordered[self._roll % len(ordered)])
                self._roll += 1
        entries: list[HostEntry] = [state.hosts[k] for k in keys if k in state.hosts]
        transitions, self._pending_transitions = self._pending_transitions, []
        if entries or transitions:
            self.db.save(entries, transitions)

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
                "sequence_gaps": self.store.total_gaps(),
            },
            latencies_ms=self._latencies(),
        )
