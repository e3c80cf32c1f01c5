"""The host agent daemon: `serve()` is startup → main_loop → shutdown.

It owns one NATS connection and one tmux socket. Stopping it never stops the sessions: they
are long-running agents the daemon only watches and steers. What it is made of, and how the
parts are wired, is agent/parts.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from nats.aio.client import Client

from agent.config import AgentConfig
from agent.discovery.runtimes import load_runtimes
from agent.discovery.tmux import TMUX_CONF
from agent.parts import assemble
from agent.uid import Identity, private_dir
from common import natsconn
from common.daemon import run_daemon
from common.signals import ExitFlags
from protocol.lifecycle import LifecycleKind

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 2.0


class HostAgent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        flags: ExitFlags | None = None,
        run_as: Identity | None = None,
    ) -> None:
        self.config = config
        self.run_as = run_as  # sessions (the tmux server) run as this user; None: as we are
        self.flags = flags or ExitFlags()
        self.host = config.host_id
        self.nc: Client | None = None
        self.parts = assemble(config, run_as, lambda: self.nc)

    async def serve(self, install_signal_handlers: bool = True) -> None:
        await run_daemon(
            self.flags,
            self.startup,
            self.main_loop,
            self.shutdown,
            install_signal_handlers=install_signal_handlers,
        )

    async def startup(self) -> None:
        p = self.parts
        state = private_dir(self.config.state_path, self.run_as)
        (state / "tmux.conf").write_text(TMUX_CONF)
        (state / "tmux.conf").chmod(0o644)
        extra = Path(self.config.runtimes_dir) if self.config.runtimes_dir else None
        p.runtimes.update(load_runtimes(extra))
        private_dir(p.capture.logs_dir, self.run_as)  # pipe-pane writes as the tenant
        await anyio.to_thread.run_sync(p.outbox.open)
        self.nc = await natsconn.connect(
            self.config.nats,
            name=f"fleet-agent {self.config.tenant}/{self.host}",
            on_reconnected=self._on_reconnected,
            on_disconnected=self._on_disconnected,
        )
        await p.launcher.start_core(p.roster)
        await p.heartbeats.lifecycle(LifecycleKind.STARTUP)
        log.info(
            "host agent %s/%s up (boot %s, tmux -L %s, %d roster sessions)",
            self.config.tenant,
            self.host,
            p.origin.boot_id,
            self.config.socket_name,
            len(p.roster),
        )

    async def main_loop(self) -> None:
        p = self.parts
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.heartbeats.beat_forever)
            tg.start_soon(p.discovery.poll_forever)
            tg.start_soon(p.publish)
            await tg.start(p.commands.serve)
            tg.start_soon(p.stream_watches)
            await self.flags.should_exit.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        nc, self.nc = self.nc, None
        if nc is None:
            self.parts.outbox.close()
            return
        with anyio.move_on_after(SHUTDOWN_FLUSH_S):
            if nc.is_connected:
                await self.parts.heartbeats.lifecycle(LifecycleKind.SHUTDOWN, nc)
                await nc.flush()
        with anyio.move_on_after(SHUTDOWN_FLUSH_S):
            await nc.close()
        self.parts.outbox.close()
        log.info("host agent %s/%s stopped", self.config.tenant, self.host)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        await self.parts.heartbeats.lifecycle(LifecycleKind.RECONNECTED)

    async def _on_disconnected(self) -> None:
        if not self.flags.should_exit.is_set():
            log.warning("disconnected from NATS; reconnecting")
