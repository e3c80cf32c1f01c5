"""The controller daemon: `serve()` is startup → main_loop → shutdown.

Startup restores the last known fleet from SQLite, connects, subscribes to every tenant's
heartbeats and lifecycle notices, and opens the API. Shutdown stops intake first, then
persists, then closes the connections and the databases.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections.abc import Sequence
from functools import partial

import anyio
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.config import ConfigError
from common.daemon import run_daemon
from common.signals import ExitFlags
from controller.api.access import Access
from controller.api.commands import CommandRouter
from controller.api.reports import external_counters, session_runtime
from controller.api.routes import controller_api
from controller.api.watch_relay import WatchRelay
from controller.attention.feed import FeedRelay
from controller.attention.live import LiveFleet
from controller.config import ControllerConfig
from controller.connections import Connections
from controller.events.ingest import Ingest
from controller.events.store.core import EventStore
from controller.events.streams import durable_name
from controller.events.synthesis.runner import SynthesisRunner
from controller.fleet.intake import intake
from controller.fleet.keepalive import Keepalives
from controller.fleet.latest import Latest
from controller.fleet.persister import Persister
from controller.fleet.rejects import Rejects
from controller.fleet.state import FleetState, HostKey, Transition
from controller.fleet.statedb import StateDB
from controller.fleet.translog import HostChangeLog
from controller.reactions.runner import Reactions
from controller.replicas.election import Election
from controller.reports.metrics import FleetMetrics, parse_addr, serve_metrics
from protocol import subjects
from protocol.events import Event
from protocol.lifecycle import Lifecycle

log = logging.getLogger(__name__)

SHUTDOWN_STEP_S = 5.0


class StartupError(ConfigError):
    """The controller cannot start with this config (metrics port in use, data dir unusable);
    `serve` reports it in one line and exits 2."""


def check_port(addr: str) -> None:
    """Refuse a metrics address we cannot listen on, before anything else starts."""
    try:
        host, port = parse_addr(addr)
        with socket.create_server((host, port)):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StartupError(f"metrics_addr {addr}: {reason}") from None


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
            self.store,
            list(config.tenants),
            config.streams,
            self._on_stored,
            self.state.counters,
            durable_name(config.replica),
        )
        # One of several replicas: an election decides who runs the once-only work.
        self.election = (
            Election(
                config.replica, config.leader_ttl_s, config.streams.replicas, self.state.counters
            )
            if config.replica
            else None
        )
        self.rejects = Rejects(self.state.counters, self.conns.publish_event)
        self.keepalives = Keepalives(self.state, self.rejects, self.conns.publish_core)
        self.synthesis = SynthesisRunner(self.store, config.synthesis, self.conns.publish_event)
        relay = WatchRelay(self.conns.tenant, self.conns.api)
        # Real-time states, the attention queue and the live feed (docs/protocol.md).
        self.live = LiveFleet(
            self.state, config.attention, self.conns.publish_event, FeedRelay(self.conns.api)
        )
        self.access = Access.for_config(config)  # who asks the API: controller/api/access.py
        self.commands = CommandRouter(
            self.state,
            self.conns.tenant,
            relay,
            self.metrics.observe_round_trip,
            self.access.tenants_of,
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
            live=self.live,
            access=self.access,
            election=self.election,
        )
        self.reactions = Reactions(
            config.reactions_path, self.state, self.conns.publish_event, self.commands.handle
        )
        if self.election is not None:
            self.reactions.leading = self.election.leading
        self._subs: list[Subscription] = []

    # -- life -------------------------------------------------------------------------------
    async def serve(self, install_signal_handlers: bool = True) -> None:
        try:
            if self.config.metrics_addr:
                check_port(self.config.metrics_addr)  # before anything starts or logs
            await run_daemon(
                self.flags,
                self.startup,
                self.main_loop,
                self.shutdown,
                install_signal_handlers=install_signal_handlers,
            )
        except* StartupError as group:  # a group also when raised before run_daemon
            # Unwrapped, so the entry point reports it as one line, as a bad config.
            first: BaseException = group
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def startup(self) -> None:
        try:
            self.db.open()
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"data_dir {self.config.data_path}: {exc}") from None
        restored = self.db.load_hosts()
        self.state.restore(restored)
        await anyio.to_thread.run_sync(self.store.open)
        nc = await self.conns.open()
        await self.ingest.setup(self.conns.jetstreams())
        if self.election is not None:
            await self.election.open(nc.jetstream())
            await self.election.step()  # a lone replica leads from its first second
        await self.synthesis.warm()
        for tenant, tnc in self.conns.by_tenant.items():
            self._subs += [
                await tnc.subscribe(subjects.all_heartbeats(tenant), cb=self.heartbeats.park),
                await tnc.subscribe(subjects.all_lifecycles(tenant), cb=self._on_lifecycle),
                await tnc.subscribe(
                    subjects.all_session_states(tenant), cb=self.live.on_state_message
                ),
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
                try:
                    await tg.start(serve_metrics, self.metrics, self.config.metrics_addr)
                except (OSError, ValueError) as exc:
                    reason = getattr(exc, "strerror", None) or str(exc)
                    raise StartupError(
                        f"metrics_addr {self.config.metrics_addr}: {reason}"
                    ) from None
            await tg.start(self.api.run)  # each API request in its own task of the service
            tg.start_soon(self.heartbeats.run, self._on_heartbeat)
            tg.start_soon(self._liveness_loop)
            tg.start_soon(self.live.run)
            tg.start_soon(self.reactions.run)
            if self.election is not None:
                tg.start_soon(self.election.run)
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
        hb = await self.keepalives.intake(msg)  # a keepalive: the heartbeat it amounts to
        if hb is None:
            return
        self.metrics.observe_heartbeat(time.time() - hb.sent_at)
        transition = self.state.on_heartbeat(hb)
        if transition is not None:  # rare: no coroutine for the 10,000 a second that are not
            await self._record(transition)
        made = self.synthesis.on_heartbeat(hb)
        if made:
            await self.synthesis.emit(made)

    async def _on_lifecycle(self, msg: Msg) -> None:
        lc = await intake(msg, subjects.Kind.LC, Lifecycle, self.rejects)
        if lc is None:
            return
        self.changes.notice(lc)
        await self._record(self.state.on_lifecycle(lc))

    async def _record(self, transition: Transition | None) -> None:
        if transition is None:
            return
        self.metrics.observe_transition(transition)
        self.persister.record(transition)
        self.changes.transition(transition)
        await self.live.on_transition(transition)

    async def _on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
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

    # -- loops ------------------------------------------------------------------------------
    async def _liveness_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.liveness_tick_s)
            for transition in self.state.tick(self._heartbeat_waiting):
                await self._record(transition)
            self.changes.flush()
            await self.commands.relay.expire()
            await self.synthesis.tick()
            await self.live.tick()

    def _heartbeat_waiting(self, key: HostKey) -> bool:
        return self.heartbeats.holds(subjects.heartbeat(*key))
