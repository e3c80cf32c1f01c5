"""Spawning ephemeral workers and stopping sessions: the two commands that change the roster."""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence

import anyio

from agent.config import SessionSpec
from agent.discovery.roster import Roster
from agent.discovery.runtimes import SHELL, RuntimeSpec, observed_runtime
from agent.discovery.sessions import primary_panes
from agent.discovery.supervisor import Launch, Supervisor
from agent.discovery.tmux import Tmux
from agent.events.publisher import Wakeup
from protocol.commands import Outcome, Spawn
from protocol.heartbeat import SessionKind
from protocol.ids import IdError, validate_session


def infer_runtime(command: Sequence[str] | None, runtimes: Mapping[str, RuntimeSpec]) -> str:
    """The runtime a spawned command will show in its pane, so that it is not flagged DRIFT:
    a known runtime whose process patterns match the command (or the script of `sh -c
    SCRIPT`), else `shell`; `stub` without a command (it runs the bundled stub)."""
    if not command:
        return "stub"
    candidates = [" ".join(command)]  # what /proc shows: the args joined by spaces
    shell = runtimes.get(SHELL)
    if shell is not None and shell.matches(candidates[0]) and "-c" in command[1:-1]:
        script = command[command.index("-c", 1) + 1]
        try:
            words = shlex.split(script)
        except ValueError:
            words = script.split()
        if words and words[0] == "exec":
            words = words[1:]
        if words:
            candidates.append(" ".join(words))  # the shell runs (or execs) it as a child
    # Anything that is not a known runtime is a command run like a shell's: no false DRIFT,
    # since a pane whose process matches nothing is never drift.
    return observed_runtime(candidates, runtimes) or (SHELL if shell else "stub")


class Spawner:
    def __init__(
        self,
        *,
        roster: Roster,
        runtimes: Mapping[str, RuntimeSpec],
        supervisor: Supervisor,
        launch: Launch,
        tmux: Tmux,
        discovery_lock: anyio.Lock,
        beat_now: Wakeup,  # a changed roster goes to the controller in the next heartbeat, now
    ) -> None:
        self.roster = roster
        self.runtimes = runtimes
        self.supervisor = supervisor
        self.launch = launch
        self.tmux = tmux
        self.discovery_lock = discovery_lock
        self.beat_now = beat_now

    async def spawn(self, body: Spawn) -> tuple[Outcome, str]:
        try:
            validate_session(body.session)
        except IdError as exc:
            return Outcome.BAD_REQUEST, str(exc)
        runtime = body.runtime or infer_runtime(body.command, self.runtimes)
        if runtime not in self.runtimes:
            return Outcome.BAD_REQUEST, (
                f"unknown runtime {runtime!r}; known: {', '.join(sorted(self.runtimes))}"
            )
        panes = primary_panes(await self.tmux.list_panes())
        if body.session in panes or self.roster.get(body.session):
            return Outcome.BAD_REQUEST, f"a session {body.session!r} already exists"
        # Under the discovery lock: a discovery pass that listed panes before this launch
        # must not find the new roster entry without its pane and clean it up.
        async with self.discovery_lock:
            spec = SessionSpec(
                name=body.session,
                runtime=runtime,
                command=body.command,
                env=body.env,
                kind=SessionKind.EPHEMERAL,
            )
            self.roster.add(spec)
            if body.ttl_s:
                self.supervisor.expire_at(body.session, time.time() + body.ttl_s)
            await self.launch(spec)
        self.beat_now.set()
        ttl = f", TTL {body.ttl_s:.0f}s" if body.ttl_s else ""
        how = "" if body.runtime else " (runtime inferred from the command)"
        return Outcome.OK, f"spawned ephemeral {runtime} session {body.session}{ttl}{how}"

    async def stop(self, session: str) -> tuple[Outcome, str]:
        spec = self.roster.get(session)
        if spec is None:  # someone else's session on our socket: never ours to end
            return Outcome.BAD_REQUEST, (
                f"{session} is not in the roster: agentfleet stops only the sessions it manages"
            )
        await self.tmux.run("kill-session", "-t", f"={session}", check=False)
        self.beat_now.set()
        if spec.kind is SessionKind.EPHEMERAL:
            self.supervisor.forget(session)
            return Outcome.OK, f"stopped ephemeral session {session}"
        self.supervisor.stop(session)
        return Outcome.OK, f"stopped core session {session} (not restarted until the agent is)"
