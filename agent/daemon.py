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

from agent import natsconn
from agent.bootunit import BootUnits
from agent.capture import CaptureSet, log_path, pipe_command, to_event
from agent.commands import CommandServer
from agent.config import AgentConfig, SessionSpec
from agent.heartbeat import HeartbeatClock, jittered
from agent.leases import Lease, TakeoverLeases, WatchLeases
from agent.outbox import Outbox, OutboxFull
from agent.procs import ProcessTable
from agent.publisher import Wakeup, publish_forever
from agent.runs import RunState, RunTracker
from agent.runtimes import RuntimeSpec, load_runtimes
from agent.sessions import Screen, SessionTable, StateChange, primary_panes
from agent.signals import ExitFlags, watch_signals
from agent.steering import Steering, excerpt
from agent.supervisor import Supervisor
from agent.tmux import TMUX_CONF, Pane, Tmux
from agent.version import VERSION
from agent.watch import stream_watches
from protocol import encode, subjects
from protocol.commands import Command, CommandResult, Outcome, Spawn
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END
from protocol.events import Event, SourceKind
from protocol.heartbeat import BootEnabled, SessionKind, SessionSnapshot
from protocol.ids import IdError, validate_session
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
    def __init__(self, config: AgentConfig, *, flags: ExitFlags | None = None) -> None:
        self.config = config
        self.flags = flags or ExitFlags()
        self.host = config.host_id
        self.clock = HeartbeatClock(
            tenant=config.tenant,
            host=self.host,
            interval_s=config.heartbeat_interval_s,
            agent_version=VERSION,
        )
        self.nc: Client | None = None
        self.tmux = Tmux(config.socket_name, config.state_path / "tmux.conf")
        self.runtimes: dict[str, RuntimeSpec] = {}
        self.table: SessionTable | None = None
        self.boot_units = BootUnits()
        self.snapshots: list[SessionSnapshot] = []
        self._refresh_lock = anyio.Lock()
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
        state = self.config.state_path
        state.mkdir(parents=True, exist_ok=True)
        (state / "tmux.conf").write_text(TMUX_CONF)
        extra = Path(self.config.runtimes_dir) if self.config.runtimes_dir else None
        self.runtimes = load_runtimes(extra)
        self.table = SessionTable(list(self.config.sessions), self.runtimes)
        self.supervisor = Supervisor(
            self.tmux, self.table, self._launch, backoff_s=self.config.restart_backoff_s
        )
        self.capture.logs_dir.mkdir(parents=True, exist_ok=True)
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
                await self._launch(spec)
            elif pane.dead:
                log.info("respawning dead session %s", spec.name)
                await self.tmux.respawn(spec.name)

    async def _launch(self, spec: SessionSpec) -> None:
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
        async with self._refresh_lock:
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
            await self._ensure_pipes(panes)
            await self._collect_events(changes, now)
            return snapshots

    async def _ensure_pipes(self, panes: list[Pane]) -> None:
        first: dict[str, Pane] = {}
        for pane in sorted(panes, key=lambda p: (p.session, p.window_index, p.pane_index)):
            first.setdefault(pane.session, pane)
        for name, pane in first.items():
            if name in self.table.skipped_names:  # type: ignore[union-attr]
                continue
            spec = self.table.spec(name) if self.table else None
            runtime = self.runtimes.get(spec.runtime if spec else "")
            begin = runtime.events_begin if runtime else DEFAULT_BEGIN
            end = runtime.events_end if runtime else DEFAULT_END
            if name not in self.capture.logs:
                persisted = await anyio.to_thread.run_sync(self.outbox.offset, name)
                self.capture.track(name, begin, end, persisted)
            if not pane.piped and not pane.dead:
                path = log_path(self.capture.logs_dir, name)
                await self.tmux.pipe_to(pane.pane_id, pipe_command(path))

    def _state_event(self, change: StateChange) -> Event:
        match = change.match
        return Event(
            tenant=self.config.tenant,
            host=self.host,
            session=change.session,
            boot_id=self.clock.boot_id,
            seq=0,
            ts=change.at,
            event_type="session.state",
            summary=f"{change.session}: {change.old.value} -> {change.new.value}",
            source_kind=SourceKind.SYSTEM,
            provenance="screen",
            payload={
                "old": change.old.value,
                "new": change.new.value,
                "rule": match.rule if match else None,
                "line": match.line if match else None,
            },
        )

    def _run_events(self, transitions: list[RunState]) -> list[Event]:
        source = {"command": SourceKind.OPERATOR}
        return [
            Event(
                tenant=self.config.tenant,
                host=self.host,
                session=t.session,
                boot_id=self.clock.boot_id,
                seq=0,
                ts=t.at,
                event_type="run.state",
                summary=f"{t.session}: run {t.run_id} {t.state} (from {t.source})",
                source_kind=source.get(t.source, SourceKind.SYSTEM),
                run_id=t.run_id,
                provenance=t.source,
                payload={"state": t.state, "source": t.source},
            )
            for t in transitions
        ]

    async def _collect_events(self, changes: list[StateChange], now: float) -> None:
        for session, lease in self.takeovers.expire(now):
            await self.lease_event(session, "lease.expired", lease, lease.holder)
        for change in changes:
            log.info("session %s: %s -> %s", change.session, change.old.value, change.new.value)
        states = [self._state_event(c) for c in changes]
        for change in changes:
            states += self._run_events(
                self.runs.on_screen(change.session, change.old, change.new, change.at)
            )
        states += self._run_events(self.runs.tick(now))
        if states:
            await anyio.to_thread.run_sync(lambda: self.outbox.append(states, droppable=True))
        before = self.capture.offsets()
        run_drafts: list[Event] = []
        results = await anyio.to_thread.run_sync(self.capture.read_all, now)
        drafts = [
            to_event(
                r,
                tenant=self.config.tenant,
                host=self.host,
                session=name,
                boot_id=self.clock.boot_id,
                ts=now,
            )
            for name, rs in results.items()
            for r in rs
        ]
        for draft in drafts:
            if draft.source_kind is SourceKind.AGENT:
                drafts_runs = self.runs.on_contract(
                    draft.session, draft.event_type, draft.run_id, draft.ts
                )
                run_drafts.extend(self._run_events(drafts_runs))
        drafts += run_drafts
        after = self.capture.offsets()
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        if not drafts and not changed:
            if states:
                self.wakeup.set()
            return
        try:
            await anyio.to_thread.run_sync(lambda: self.outbox.append(drafts, changed))
        except OutboxFull as exc:
            # Hold the output back in the pane logs until the outbox drains.
            for name, (_, offset) in before.items():
                self.capture.logs[name].rewind(offset)
            self.outbox.bump("held_back_full")
            log.warning("%s; pane output waits in the logs", exc)
            return
        self.wakeup.set()

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

    # -- what commands use -----------------------------------------------------------------
    async def pane(self, session: str) -> Pane | None:
        return primary_panes(await self.tmux.list_panes()).get(session)

    def runtime_of(self, session: str) -> RuntimeSpec:
        spec = self.table.spec(session) if self.table else None
        name = (
            spec.runtime
            if spec
            else next((s.runtime_observed for s in self.snapshots if s.name == session), None)
        )
        return self.runtimes.get(name or "shell") or self.runtimes["shell"]

    async def emit(self, events: list[Event]) -> None:
        if events:
            await anyio.to_thread.run_sync(lambda: self.outbox.append(events))
            self.wakeup.set()

    async def record(self, command_id: str, result: CommandResult, events: list[Event]) -> None:
        await self.emit(events)
        await anyio.to_thread.run_sync(
            self.outbox.remember, command_id, encode(result), time.time()
        )

    def _event(
        self, session: str, event_type: str, summary: str, source: SourceKind, **fields: object
    ) -> Event:
        return Event(
            tenant=self.config.tenant,
            host=self.host,
            session=session,
            boot_id=self.clock.boot_id,
            seq=0,
            ts=time.time(),
            event_type=event_type,
            summary=summary,
            source_kind=source,
            **fields,
        )  # type: ignore[arg-type]

    async def lease_event(self, session: str, kind: str, lease: Lease, who: str) -> None:
        await self.emit(
            [
                self._event(
                    session,
                    kind,
                    f"{session}: {kind.split('.')[1]} by {who} ({lease.reason})",
                    SourceKind.OPERATOR,
                    payload={
                        "holder": lease.holder,
                        "reason": lease.reason,
                        "since": lease.since,
                        "expires_at": lease.expires_at,
                        "by": who,
                    },
                )
            ]
        )

    async def cancel(
        self,
        cmd: Command,
        pane: Pane,
        spec: RuntimeSpec,
        timeout_s: float,
        make: Callable[..., CommandResult],
    ) -> CommandResult:
        state, _, lines = await self.steering.state(pane, spec)
        if state.value == "idle":
            return make(
                cmd, Outcome.NOOP, "the session is idle: nothing to cancel", screen=excerpt(lines)
            )
        requested = time.time()
        await self.emit(
            [
                *self._run_events(
                    self.runs.on_command(pane.session, "cancel_requested", requested)
                ),
                self._event(
                    pane.session,
                    "run.cancel_requested",
                    f"{pane.session}: cancel requested by {cmd.issued_by}",
                    SourceKind.OPERATOR,
                    payload={"command_id": cmd.command_id},
                ),
            ]
        )
        await self.tmux.run("send-keys", "-t", pane.pane_id, spec.interrupt_key)
        with anyio.move_on_after(timeout_s):
            while True:
                state, _, lines = await self.steering.state(pane, spec)
                if state.value == "idle":
                    latency_ms = round((time.time() - requested) * 1000, 1)
                    await self.emit(
                        [
                            *self._run_events(
                                self.runs.on_command(pane.session, "cancelled", time.time())
                            ),
                            self._event(
                                pane.session,
                                "run.cancelled",
                                f"{pane.session}: cancelled after {latency_ms:.0f} ms",
                                SourceKind.SYSTEM,
                                provenance="cancel command, screen idle",
                                payload={"latency_ms": latency_ms, "command_id": cmd.command_id},
                            ),
                        ]
                    )
                    return make(
                        cmd,
                        Outcome.CANCELLED,
                        f"cancelled in {latency_ms:.0f} ms",
                        details={"latency_ms": latency_ms},
                    )
                await anyio.sleep(0.1)
        return make(
            cmd,
            Outcome.FAILED,
            f"sent {spec.interrupt_key}, but the session is still "
            f"{state.value} after {timeout_s:.0f}s",
            screen=excerpt(lines),
        )

    async def spawn(self, body: Spawn) -> tuple[Outcome, str]:
        assert self.table is not None and self.supervisor is not None
        try:
            validate_session(body.session)
        except IdError as exc:
            return Outcome.BAD_REQUEST, str(exc)
        if body.runtime not in self.runtimes:
            return Outcome.BAD_REQUEST, (
                f"unknown runtime {body.runtime!r}; known: {', '.join(sorted(self.runtimes))}"
            )
        if await self.pane(body.session) is not None or self.table.spec(body.session):
            return Outcome.BAD_REQUEST, f"a session {body.session!r} already exists"
        # Under the refresh lock: a discovery pass that listed panes before this launch
        # must not find the new roster entry without its pane and clean it up.
        async with self._refresh_lock:
            spec = SessionSpec(
                name=body.session,
                runtime=body.runtime,
                command=body.command,
                env=body.env,
                kind=SessionKind.EPHEMERAL,
            )
            self.table.roster.append(spec)
            if body.ttl_s:
                self.supervisor.expires[body.session] = time.time() + body.ttl_s
            await self._launch(spec)
        self.beat_now.set()
        ttl = f", TTL {body.ttl_s:.0f}s" if body.ttl_s else ""
        return Outcome.OK, f"spawned ephemeral {body.runtime} session {body.session}{ttl}"

    async def stop_session(self, session: str) -> tuple[Outcome, str]:
        assert self.table is not None and self.supervisor is not None
        spec = self.table.spec(session)
        await self.tmux.run("kill-session", "-t", f"={session}", check=False)
        self.beat_now.set()
        if spec is not None and spec.kind is SessionKind.EPHEMERAL:
            self.supervisor.forget(session)
            return Outcome.OK, f"stopped ephemeral session {session}"
        if spec is not None:
            self.supervisor.stopped.add(session)
            return Outcome.OK, f"stopped core session {session} (not restarted until the agent is)"
        return Outcome.OK, f"stopped unmanaged session {session}"

    async def explain(self, session: str, pane: Pane) -> dict[str, object]:
        spec = self.runtime_of(session)
        _, match, lines = await self.steering.state(pane, spec)
        where = (
            f"rule {match.rule!r} ({match.source}) matched line {match.line_no}: {match.line!r}"
            if match.line is not None
            else f"{match.rule} ({match.source})"
        )
        return {
            "message": f"{session} is {match.state.value}: {where} [runtime {spec.name}]",
            "screen": excerpt(lines),
            "details": {
                "state": match.state.value,
                "rule": match.rule,
                "source": match.source,
                "line_no": match.line_no,
                "line": match.line,
                "runtime": spec.name,
            },
        }

    # -- loops ------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a tmux hiccup must not stop the agent
                log.exception("discovery failed")
            await anyio.sleep(self.config.poll_interval_s)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                snapshots = await self.refresh()
                await self._publish_heartbeat(snapshots)
            except Exception:
                log.exception("heartbeat failed")
            await self.beat_now.wait(jittered(self.config.heartbeat_interval_s))

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
