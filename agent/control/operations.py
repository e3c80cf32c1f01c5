"""What operator commands do to a running session: interrupt it, explain its state.
The command endpoint (agent/control/server.py) decides *whether*; this module does it.
Spawning and stopping sessions is agent/control/spawn.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import anyio

from agent.control.explain import Explanation, Signals, explanation
from agent.control.screenproof import refusal
from agent.control.steering import Steering, excerpt
from agent.discovery.roster import Roster
from agent.discovery.runtimes import RuntimeSpec
from agent.discovery.sessions import primary_panes
from agent.discovery.tmux import Pane, Tmux
from agent.events.emitter import Emitter
from agent.events.flow import run_events
from agent.events.origin import Origin
from agent.events.runs import RunTracker
from protocol.commands import Command, CommandResult, Outcome
from protocol.events import SourceKind
from protocol.heartbeat import SessionSnapshot, SessionState


class Operations:
    def __init__(
        self,
        *,
        tmux: Tmux,
        steering: Steering,
        roster: Roster,
        runtimes: Mapping[str, RuntimeSpec],
        snapshots: Callable[[], Sequence[SessionSnapshot]],  # the latest discovery pass
        origin: Origin,
        emitter: Emitter,
        runs: RunTracker,
        signals: Signals | None = None,  # the hooks' word (HookReceiver.account); None: none
    ) -> None:
        self.tmux = tmux
        self.steering = steering
        self.roster = roster
        self.runtimes = runtimes
        self.snapshots = snapshots
        self.origin = origin
        self.emitter = emitter
        self.runs = runs
        self.signals = signals

    async def pane(self, session: str) -> Pane | None:
        return primary_panes(await self.tmux.list_panes()).get(session)

    def runtime_of(self, session: str) -> RuntimeSpec:
        spec = self.roster.get(session)
        name = (
            spec.runtime
            if spec
            else next((s.runtime_observed for s in self.snapshots() if s.name == session), None)
        )
        return self.runtimes.get(name or "shell") or self.runtimes["shell"]

    async def cancel(
        self,
        cmd: Command,
        pane: Pane,
        spec: RuntimeSpec,
        timeout_s: float,
        make: Callable[..., CommandResult],
    ) -> CommandResult:
        state, match, lines = await self.steering.state(pane, spec)
        if state is SessionState.IDLE:
            return make(
                cmd, Outcome.NOOP, "the session is idle: nothing to cancel", screen=excerpt(lines)
            )
        if state is SessionState.BLOCKED:
            # The interrupt key on a dialog is an answer (Escape declines a tool call): the
            # operator answers it themselves, with `fleet answer`.
            out = refusal(match, lines)
            return make(cmd, out.outcome, out.message, screen=out.screen, details=out.details)
        requested = time.time()
        run_id = self.runs.current(pane.session)  # the run this cancel ends, if one was seen
        await self.emitter.emit(
            [
                *run_events(
                    self.origin, self.runs.on_command(pane.session, "cancel_requested", requested)
                ),
                self.origin.event(
                    pane.session,
                    "run.cancel_requested",
                    f"{pane.session}: cancel requested by {cmd.issued_by}",
                    SourceKind.OPERATOR,
                    run_id=run_id,
                    payload={"command_id": cmd.command_id},
                ),
            ]
        )
        await self.tmux.run("send-keys", "-t", pane.pane_id, spec.interrupt_key)
        with anyio.move_on_after(timeout_s):
            while True:
                state, _, lines = await self.steering.state(pane, spec)
                if state.value == "idle":
                    return await self._cancelled(cmd, pane, requested, run_id, make)
                await anyio.sleep(0.1)
        return make(
            cmd,
            Outcome.FAILED,
            f"sent {spec.interrupt_key}, but the session is still "
            f"{state.value} after {timeout_s:.0f}s",
            screen=excerpt(lines),
        )

    async def _cancelled(
        self,
        cmd: Command,
        pane: Pane,
        requested: float,
        run_id: str | None,
        make: Callable[..., CommandResult],
    ) -> CommandResult:
        latency_ms = round((time.time() - requested) * 1000, 1)
        await self.emitter.emit(
            [
                *run_events(
                    self.origin, self.runs.on_command(pane.session, "cancelled", time.time())
                ),
                self.origin.event(
                    pane.session,
                    "run.cancelled",
                    f"{pane.session}: cancelled after {latency_ms:.0f} ms",
                    SourceKind.SYSTEM,
                    provenance="cancel command, screen idle",
                    run_id=run_id,
                    payload={"latency_ms": latency_ms, "command_id": cmd.command_id},
                ),
            ]
        )
        return make(
            cmd,
            Outcome.CANCELLED,
            f"cancelled in {latency_ms:.0f} ms",
            details={"latency_ms": latency_ms, "run_id": run_id},
        )

    async def explain(self, session: str, pane: Pane) -> Explanation:
        spec = self.runtime_of(session)
        _, match, lines = await self.steering.state(pane, spec)
        said = self.signals(session) if self.signals is not None else (None, None)
        return explanation(session, spec, match, lines, pane.title, said, time.time())
