"""Launches the roster and keeps it alive: core sessions that die are restarted with backoff;
ephemeral workers are cleaned up when their process exits or their TTL runs out; an operator's
`stop` is respected (a stopped core session is not restarted until the agent restarts)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.config import SessionSpec
from agent.discovery.launch import session_env
from agent.discovery.roster import Roster
from agent.discovery.sessions import primary_panes
from agent.discovery.tmux import Pane, Tmux
from protocol.heartbeat import SessionKind

log = logging.getLogger(__name__)

STABLE_AFTER_S = 60.0  # a session alive this long has its backoff reset


@dataclass
class _Restart:
    next_at: float
    backoff: float
    alive_since: float | None = None


Launch = Callable[[SessionSpec], Awaitable[None]]
# Adds what a runtime's own signals need to a launch: (spec, command, env) -> both.
Prepare = Callable[
    [SessionSpec, str | list[str], dict[str, str]], tuple[str | list[str], dict[str, str]]
]


def default_command(spec: SessionSpec) -> str | list[str] | None:
    if spec.command:
        return spec.command
    if spec.runtime == "stub":
        # The interpreter running us, not whatever `python` is first on the session's PATH.
        return [sys.executable, "-m", "agent", "stub"]
    if spec.runtime == "shell":
        return None  # tmux starts the default shell
    return [spec.runtime]


class Launcher:
    """Starts a roster session in its own tmux session, with the fleet's variables set."""

    def __init__(
        self,
        tmux: Tmux,
        tenant: str,
        host: str,
        width: int,
        height: int,
        prepare: Prepare | None = None,
    ) -> None:
        self.tmux = tmux
        self.prepare = prepare  # the hooks' wiring (agent/hooks/wiring.py)
        self.tenant = tenant
        self.host = host
        self.width = width
        self.height = height

    async def launch(self, spec: SessionSpec) -> None:
        log.info("launching session %s (%s)", spec.name, spec.runtime)
        fleet = {"FLEET_TENANT": self.tenant, "FLEET_HOST": self.host, "FLEET_SESSION": spec.name}
        env = session_env(fleet, spec.env_file, spec.env, session=spec.name)
        command = default_command(spec)
        if self.prepare is not None and command is not None:
            command, env = self.prepare(spec, command, env)
        await self.tmux.new_session(
            spec.name,
            command,
            cwd=spec.cwd,
            env=env,
            width=self.width,
            height=self.height,
        )

    async def start_core(self, roster: Roster) -> None:
        """At startup: launch core sessions not running, respawn dead ones, adopt the rest."""
        panes = primary_panes(await self.tmux.list_panes())
        for spec in roster:
            if spec.kind is not SessionKind.CORE:
                continue
            pane = panes.get(spec.name)
            if pane is None:
                await self.launch(spec)
            elif pane.dead:
                log.info("respawning dead session %s", spec.name)
                await self.tmux.respawn(spec.name)


@dataclass
class Supervisor:
    tmux: Tmux
    roster: Roster
    launch: Launch
    note_restart: Callable[[str], None]  # the session table counts them for the heartbeat
    backoff_s: float = 5.0
    backoff_cap_s: float = 60.0
    stopped: set[str] = field(default_factory=set)
    expires: dict[str, float] = field(default_factory=dict)  # ephemeral name -> TTL end
    _restarts: dict[str, _Restart] = field(default_factory=dict)

    async def reconcile(self, panes: list[Pane], now: float) -> None:
        by_name = primary_panes(panes)
        for spec in self.roster:
            pane = by_name.get(spec.name)
            if spec.kind is SessionKind.EPHEMERAL:
                await self._ephemeral(spec, pane, now)
            elif spec.name not in self.stopped:
                await self._core(spec, pane, now)

    async def _core(self, spec: SessionSpec, pane: Pane | None, now: float) -> None:
        info = self._restarts.get(spec.name)
        if pane is not None and not pane.dead:
            if info is not None:
                info.alive_since = info.alive_since or now
                if now - info.alive_since >= STABLE_AFTER_S:
                    del self._restarts[spec.name]
            return
        if info is None:
            # First sight of the death: report it (DEAD/MISSING) for one backoff first.
            self._restarts[spec.name] = _Restart(
                next_at=now + self.backoff_s, backoff=self.backoff_s
            )
            return
        info.alive_since = None
        if now < info.next_at:
            return
        log.info("restarting core session %s (backoff %.0fs)", spec.name, info.backoff)
        if pane is None:
            await self.launch(spec)
        else:
            await self.tmux.respawn(spec.name)
        self.note_restart(spec.name)
        info.backoff = min(self.backoff_cap_s, info.backoff * 2)
        info.next_at = now + info.backoff

    async def _ephemeral(self, spec: SessionSpec, pane: Pane | None, now: float) -> None:
        expired = spec.name in self.expires and now >= self.expires[spec.name]
        if pane is not None and not pane.dead and not expired:
            return
        why = "TTL reached" if expired else "run ended" if pane else "gone"
        log.info("cleaning up ephemeral session %s (%s)", spec.name, why)
        if pane is not None:
            await self.tmux.run("kill-session", "-t", f"={spec.name}", check=False)
        self.forget(spec.name)

    def expire_at(self, name: str, at: float) -> None:
        """An ephemeral session's TTL: it is stopped and forgotten at ``at``."""
        self.expires[name] = at

    def stop(self, name: str) -> None:
        """An operator stopped this core session: leave it down until the agent restarts."""
        self.stopped.add(name)

    def forget(self, name: str) -> None:
        self.roster.remove(name)
        self.expires.pop(name, None)
        self._restarts.pop(name, None)
