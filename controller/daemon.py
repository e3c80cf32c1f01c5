"""The controller daemon: `serve()` is startup → main_loop → shutdown.

Startup restores the last known fleet from SQLite, connects, subscribes to every tenant's
heartbeats and lifecycle notices, and opens the API. Shutdown stops intake first, then
persists, then closes the connections and the databases. What it is made of, and how the
parts are wired, is controller/parts.py; what it does with what it hears, controller/hearing.py.
"""

from __future__ import annotations

import logging
import socket
import sqlite3

import anyio
from nats.aio.subscription import Subscription

from common.config import ConfigError
from common.daemon import run_daemon
from common.signals import ExitFlags
from controller.config import ControllerConfig
from controller.parts import assemble
from controller.reports.metrics import parse_addr, serve_metrics
from protocol import subjects

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
        self.parts = assemble(config)
        self._subs: list[Subscription] = []

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
        p = self.parts
        try:
            p.db.open()
        except (OSError, sqlite3.Error) as exc:
            raise StartupError(f"data_dir {self.config.data_path}: {exc}") from None
        restored = p.db.load_hosts()
        p.state.restore(restored)
        await anyio.to_thread.run_sync(p.store.open)
        await p.live.restore(p.store, self.config.tenants)  # acks, snoozes, event-derived items
        nc = await p.conns.open()
        await p.ingest.setup(p.conns.jetstreams())
        if p.election is not None:
            await p.election.open(nc.jetstream())
            try:  # a lone replica leads from its first second
                await p.election.step()
            except Exception as exc:  # the KV's stream between leaders: the run loop retries
                log.warning("leader election at startup: %s", exc or type(exc).__name__)
        await p.synthesis.warm()
        await p.hearing.listen(p.conns.by_tenant, self._subs)
        await p.api.start(nc)
        await nc.flush()
        log.info(
            "controller up: tenants %s, %d hosts restored, API on %s",
            ",".join(self.config.tenants),
            len(restored),
            subjects.controller_api_all(),
        )

    async def main_loop(self) -> None:
        p, addr = self.parts, self.config.metrics_addr
        async with anyio.create_task_group() as tg:
            if addr:
                # Bound before anything else runs: a port in use fails the start loudly.
                try:
                    await tg.start(serve_metrics, p.metrics, addr)
                except (OSError, ValueError) as exc:
                    reason = getattr(exc, "strerror", None) or str(exc)
                    raise StartupError(f"metrics_addr {addr}: {reason}") from None
            await tg.start(p.api.run)  # each API request in its own task of the service
            tg.start_soon(p.heartbeats.run, p.hearing.on_heartbeat)
            tg.start_soon(p.hearing.liveness_loop)
            tg.start_soon(p.live.run)
            tg.start_soon(p.reactions.run)
            if p.election is not None:
                tg.start_soon(p.election.run)
            tg.start_soon(p.persister.run, lambda: p.state)
            tg.start_soon(p.ingest.run, dict(p.conns.by_tenant), p.ingest_lock)
            await self.flags.should_exit.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        p = self.parts
        with anyio.move_on_after(SHUTDOWN_STEP_S):
            await p.api.stop()
            await p.commands.relay.close()
            for sub in self._subs:
                await sub.unsubscribe()
            if p.election is not None:
                await p.election.resign()
        self._subs.clear()
        p.changes.flush()
        if p.db.is_open:
            p.persister.persist(p.state, everything=True)
        await p.conns.close(SHUTDOWN_STEP_S)
        p.db.close()
        p.store.close()
        log.info("controller stopped")
