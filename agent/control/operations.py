"""What operator commands do to sessions: type, interrupt, spawn, stop, explain, leases.
The command endpoint (agent/commands.py) decides *whether*; this module does it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from agent.config import SessionSpec
from agent.control.leases import Lease
from agent.control.steering import excerpt
from agent.discovery.runtimes import RuntimeSpec
from agent.discovery.sessions import primary_panes
from agent.discovery.tmux import Pane
from protocol import encode
from protocol.commands import Command, CommandResult, Outcome, Spawn
from protocol.events import Event, SourceKind
from protocol.heartbeat import SessionKind
from protocol.ids import IdError, validate_session

if TYPE_CHECKING:
    from agent.daemon import HostAgent


class Operations:
    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent

    async def pane(self, session: str) -> Pane | None:
        return primary_panes(await self.agent.tmux.list_panes()).get(session)

    def runtime_of(self, session: str) -> RuntimeSpec:
        spec = self.agent.table.spec(session) if self.agent.table else None
        name = (
            spec.runtime
            if spec
            else next((s.runtime_observed for s in self.agent.snapshots if s.name == session), None)
        )
        return self.agent.runtimes.get(name or "shell") or self.agent.runtimes["shell"]

    async def emit(self, events: list[Event]) -> None:
        if events:
            await anyio.to_thread.run_sync(lambda: self.agent.outbox.append(events))
            self.agent.wakeup.set()

    async def record(self, command_id: str, result: CommandResult, events: list[Event]) -> None:
        await self.emit(events)
        await anyio.to_thread.run_sync(
            self.agent.outbox.remember, command_id, encode(result), time.time()
        )

    def _event(
        self, session: str, event_type: str, summary: str, source: SourceKind, **fields: object
    ) -> Event:
        return Event(
            tenant=self.agent.config.tenant,
            host=self.agent.host,
            session=session,
            boot_id=self.agent.clock.boot_id,
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
        state, _, lines = await self.agent.steering.state(pane, spec)
        if state.value == "idle":
            return make(
                cmd, Outcome.NOOP, "the session is idle: nothing to cancel", screen=excerpt(lines)
            )
        requested = time.time()
        await self.emit(
            [
                *self.agent.flow.run_events(
                    self.agent.runs.on_command(pane.session, "cancel_requested", requested)
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
        await self.agent.tmux.run("send-keys", "-t", pane.pane_id, spec.interrupt_key)
        with anyio.move_on_after(timeout_s):
            while True:
                state, _, lines = await self.agent.steering.state(pane, spec)
                if state.value == "idle":
                    latency_ms = round((time.time() - requested) * 1000, 1)
                    await self.emit(
                        [
                            *self.agent.flow.run_events(
                                self.agent.runs.on_command(pane.session, "cancelled", time.time())
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
        assert self.agent.table is not None and self.agent.supervisor is not None
        try:
            validate_session(body.session)
        except IdError as exc:
            return Outcome.BAD_REQUEST, str(exc)
        if body.runtime not in self.agent.runtimes:
            return Outcome.BAD_REQUEST, (
                f"unknown runtime {body.runtime!r}; known: {', '.join(sorted(self.agent.runtimes))}"
            )
        if await self.pane(body.session) is not None or self.agent.table.spec(body.session):
            return Outcome.BAD_REQUEST, f"a session {body.session!r} already exists"
        # Under the refresh lock: a discovery pass that listed panes before this launch
        # must not find the new roster entry without its pane and clean it up.
        async with self.agent.refresh_lock:
            spec = SessionSpec(
                name=body.session,
                runtime=body.runtime,
                command=body.command,
                env=body.env,
                kind=SessionKind.EPHEMERAL,
            )
            self.agent.table.roster.append(spec)
            if body.ttl_s:
                self.agent.supervisor.expires[body.session] = time.time() + body.ttl_s
            await self.agent.launch(spec)
        self.agent.beat_now.set()
        ttl = f", TTL {body.ttl_s:.0f}s" if body.ttl_s else ""
        return Outcome.OK, f"spawned ephemeral {body.runtime} session {body.session}{ttl}"

    async def stop_session(self, session: str) -> tuple[Outcome, str]:
        assert self.agent.table is not None and self.agent.supervisor is not None
        spec = self.agent.table.spec(session)
        await self.agent.tmux.run("kill-session", "-t", f"={session}", check=False)
        self.agent.beat_now.set()
        if spec is not None and spec.kind is SessionKind.EPHEMERAL:
            self.agent.supervisor.forget(session)
            return Outcome.OK, f"stopped ephemeral session {session}"
        if spec is not None:
            self.agent.supervisor.stopped.add(session)
            return Outcome.OK, f"stopped core session {session} (not restarted until the agent is)"
        return Outcome.OK, f"stopped unmanaged session {session}"

    async def explain(self, session: str, pane: Pane) -> dict[str, object]:
        spec = self.runtime_of(session)
        _, match, lines = await self.agent.steering.state(pane, spec)
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
