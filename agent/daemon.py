"""The host agent daemon: `serve()` is startup → main_loop → shutdown.

It owns one NATS connection and one tmux socket. Stopping it never stops the sessions: they
are long-running agents the daemon only watches and steers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from nats.aio.client import Client

from agent.config import AgentConfig, SessionSpec
from agent.control.leases import TakeoverLeases, WatchLeases
from agent.control.operations import Operations
from agent.control.server import CommandServer
from agent.control.steering import Steering
from agent.control.watch import stream_watches
from agent.discovery.bootunit import BootUnits
from agent.discovery.procs import ProcessTable
from agent.discovery.runtimes import RuntimeSpec, load_runtimes
from agent.discovery.sessions import Screen, SessionTable, primary_panes
from agent.discovery.supervisor import Supervisor
from agent.discovery.tmux import TMUX_CONF, Pane, Tmux
from agent.events.capture import CaptureSet
from agent.events.flow import EventFlow
from agent.events.outbox import Outbox
from agent.events.publisher import Wakeup, publish_forever
from agent.events.runs import RunTracker
from agent.heartbeat import HeartbeatClock, jittered
from agent.uid import Identity, as_user_prefix, private_dir
from common import natsconn
from common.signals import ExitFlags, watch_signals
from common.version import VERSION
from protocol import encode, subjects
from protocol.heartbeat import BootEnabled, SessionKind, SessionSnapshot
from protocol.lifecycle import Lifecycle, LifecycleKind

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 2.0


def default_command(spec: SessionSpec) -> str | list[str] | None:
    if spec.command:
        return spec.command
    if spec.runtime == "stub":
        # The interpreter running us, not whatever `python` is first on the session's PATH.
        return [sys.executable, "-m", "agent", "stub"]
    if spec.runtime == "shell":
        return None  # tmux starts the default shell
    return [spec.runtime]


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
        self.clock = HeartbeatClock(
            tenant=config.tenant,
            host=self.host,
            interval_s=config.heartbeat_interval_s,
            agent_version=VERSION,
        )
        self.nc: Client | None = None
        self.tmux = Tmux(
            config.socket_name, config.state_path / "tmux.conf", prefix=as_user_prefix(run_as)
        )
        self.runtimes: dict[str, RuntimeSpec] = {}
        self.table: SessionTable | None = None
        self.boot_units = BootUnits()
        self.snapshots: list[SessionSnapshot] = []
        self.refresh_lock = anyio.Lock()
        self._refreshed_at = 0.0
        self.outbox = Outbox(
            config.state_path / "outbox.db", self.clock.boot_id, config.outbox_max_events
        )
        self.capture = CaptureSet(config.state_path / "logs")
        self.wakeup = Wakeup()
        self.steering = Steering(self.tmux, self.capture.logs_dir)
        self.takeovers = TakeoverLeases()
        self.watches = WatchLeases()
        self.want_snapshot: set[str] = set()
        self.commands = CommandServer(self)
        self.supervisor: Supervisor | None = None
        self.ops = Operations(self)
        self.flow = EventFlow(self)
        self.runs = RunTracker()
        self.beat_now = Wakeup()  # a command changed the sessions: tell the controller now

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

    async def startup(self) -> None:
        state = private_dir(self.config.state_path, self.run_as)
        (state / "tmux.conf").write_text(TMUX_CONF)
        (state / "tmux.conf").chmod(0o644)
        extra = Path(self.config.runtimes_dir) if self.config.runtimes_dir else None
        self.runtimes = load_runtimes(extra)
        self.table = SessionTable(list(self.config.sessions), self.runtimes)
        self.supervisor = Supervisor(
            self.tmux, self.table, self.launch, backoff_s=self.config.restart_backoff_s
        )
        private_dir(self.capture.logs_dir, self.run_as)  # pipe-pane writes as the tenant
        await anyio.to_thread.run_sync(self.outbox.open)
        self.nc = await natsconn.connect(
            self.config.nats,
            name=f"fleet-agent {self.config.tenant}/{self.host}",
            on_reconnected=self._on_reconnected,
            on_disconnected=self._on_disconnected,
        )
        await self._launch_roster()
        await self._publish_lifecycle(LifecycleKind.STARTUP)
        log.info(
            "host agent %s/%s up (boot %s, tmux -L %s, %d roster sessions)",
            self.config.tenant,
            self.host,
            self.clock.boot_id,
            self.config.socket_name,
            len(self.config.sessions),
        )

    async def _until_exit_requested(self, step: Callable[[], Awaitable[None]]) -> None:
        # Startup may wait forever for NATS; a stop request must still end it.
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await self.flags.should_exit.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await step()
            tg.cancel_scope.cancel()

    async def main_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat_loop)
            tg.start_soon(self._poll_loop)
            tg.start_soon(publish_forever, self.outbox, lambda: self.nc, self.wakeup)
            await tg.start(self.commands.serve)
            tg.start_soon(stream_watches, self)
            await self.flags.should_exit.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        nc, self.nc = self.nc, None
        if nc is None:
            self.outbox.close()
            return
        with anyio.move_on_after(SHUTDOWN_FLUSH_S):
            if nc.is_connected:
                await self._publish_lifecycle(LifecycleKind.SHUTDOWN, nc)
                await nc.flush()
        with anyio.move_on_after(SHUTDOWN_FLUSH_S):
            await nc.close()
        self.outbox.close()
        log.info("host agent %s/%s stopped", self.config.tenant, self.host)

    # -- sessions ---------------------------------------------------------------------------
    async def _launch_roster(self) -> None:
        panes = primary_panes(await self.tmux.list_panes())
        for spec in self.config.sessions:
            if spec.kind is not SessionKind.CORE:
                continue
            pane = panes.get(spec.name)
            if pane is None:
                await self.launch(spec)
            elif pane.dead:
                log.info("respawning dead session %s", spec.name)
                await self.tmux.respawn(spec.name)

    async def launch(self, spec: SessionSpec) -> None:
        log.info("launching session %s (%s)", spec.name, spec.runtime)
        env = {
            "FLEET_TENANT": self.config.tenant,
            "FLEET_HOST": self.host,
            "FLEET_SESSION": spec.name,
            **spec.env,
        }
        await self.tmux.new_session(
            spec.name,
            default_command(spec),
            cwd=spec.cwd,
            env=env,
            width=self.config.window_width,
            height=self.config.window_height,
        )

    async def refresh(self) -> list[SessionSnapshot]:
        """One discovery pass: one list-panes, one /proc scan, one capture per live pane."""
        assert self.table is not None
        async with self.refresh_lock:
            panes = await self.tmux.list_panes()
            procs = await anyio.to_thread.run_sync(ProcessTable.snapshot)
            screens = await self._capture_screens(panes)
            boot: dict[str, BootEnabled] = {}
            for spec in self.config.sessions:
                boot[spec.name] = await self.boot_units.state(spec.unit)
            now = time.time()
            assert self.supervisor is not None
            await self.supervisor.reconcile(panes, now)
            snapshots, changes = self.table.update(panes, procs, screens, boot, now)
            self.snapshots = snapshots
            self._refreshed_at = time.monotonic()
            await self.flow.ensure_pipes(panes)
            await self.flow.collect(changes, now)
            return snapshots

    async def _capture_screens(self, panes: list[Pane]) -> dict[str, Screen]:
        screens: dict[str, Screen] = {}
        seen: set[str] = set()
        for pane in sorted(panes, key=lambda p: (p.session, p.window_index, p.pane_index)):
            if pane.session in seen or pane.dead:
                continue
            seen.add(pane.session)
            text = await self.tmux.capture(pane.pane_id)
            screens[pane.session] = Screen(text.splitlines(), pane.title)
        return screens

    # -- loops ------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a tmux hiccup must not stop the agent
                log.exception("discovery failed")
            await anyio.sleep(self.config.poll_interval_s)

    async def _heartbeat_loop(self) -> None:
        forced = True
        while True:
            try:
                # The poll loop keeps the snapshot at most poll_interval_s old; discover again
                # only if it is older, or a command just changed the sessions.
                stale = time.monotonic() - self._refreshed_at > self.config.poll_interval_s
                snapshots = await self.refresh() if forced or stale else self.snapshots
                await self._publish_heartbeat(snapshots)
            except Exception:
                log.exception("heartbeat failed")
            forced = await self.beat_now.wait(jittered(self.config.heartbeat_interval_s))

    async def _publish_heartbeat(self, snapshots: list[SessionSnapshot]) -> None:
        nc = self.nc
        # While disconnected, a heartbeat would only sit in nats-py's buffer and arrive stale.
        if nc is None or not nc.is_connected:
            return
        beat = self.clock.next(snapshots, time.time())
        await nc.publish(subjects.heartbeat(self.config.tenant, self.host), encode(beat))

    async def _publish_lifecycle(self, kind: LifecycleKind, nc: Client | None = None) -> None:
        nc = nc or self.nc
        if nc is None:
            return
        notice = Lifecycle(
            tenant=self.config.tenant,
            host=self.host,
            boot_id=self.clock.boot_id,
            event=kind,
            sent_at=time.time(),
            agent_version=VERSION,
            interval_s=self.config.heartbeat_interval_s,
        )
        await nc.publish(subjects.lifecycle(self.config.tenant, self.host), encode(notice))

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        await self._publish_lifecycle(LifecycleKind.RECONNECTED)

    async def _on_disconnected(self) -> None:
        if not self.flags.should_exit.is_set():
            log.warning("disconnected from NATS; reconnecting")
