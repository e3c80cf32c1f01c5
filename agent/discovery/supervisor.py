"""Keeps the roster alive: core sessions that die are restarted with backoff; ephemeral
workers are cleaned up when their process exits or their TTL runs out; an operator's `stop`
is respected (a stopped core session is not restarted until the agent restarts)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.config import SessionSpec
from agent.discovery.sessions import SessionTable, primary_panes
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


@dataclass
class Supervisor:
    tmux: Tmux
    table: SessionTable
    launch: Launch
    backoff_s: float = 5.0
    backoff_cap_s: float = 60.0
    stopped: set[str] = field(default_factory=set)
    expires: dict[str, float] = field(default_factory=dict)  # ephemeral name -> TTL end
    _restarts: dict[str, _Restart] = field(default_factory=dict)

    async def reconcile(self, panes: list[Pane], now: float) -> None:
        by_name = primary_panes(panes)
        for spec in list(self.table.roster):
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
        self.table.note_restart(spec.name)
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

    def forget(self, name: str) -> None:
        self.table.roster[:] = [s for s in self.table.roster if s.name != name]
        self.expires.pop(name, None)
        self._restarts.pop(name, None)
