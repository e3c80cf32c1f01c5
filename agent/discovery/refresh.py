"""One discovery pass, and the loop that runs one every `poll_interval_s`.

A pass is one `tmux list-panes`, one /proc scan and one capture per live session; it lets the
supervisor restart or clean up, turns what it saw into session snapshots and state changes,
and hands those to the event flow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from agent.discovery.bootunit import BootUnits
from agent.discovery.procs import ProcessTable
from agent.discovery.roster import Roster
from agent.discovery.sessions import Screen, SessionTable, primary_panes
from agent.discovery.supervisor import Supervisor
from agent.discovery.tmux import Pane, Tmux
from agent.events.flow import EventFlow
from protocol.heartbeat import BootEnabled, SessionSnapshot

log = logging.getLogger(__name__)


class Discovery:
    def __init__(
        self,
        *,
        tmux: Tmux,
        roster: Roster,
        table: SessionTable,
        supervisor: Supervisor,
        flow: EventFlow,
        boot_units: BootUnits,
        poll_interval_s: float,
        drain_signals: Callable[[], list[Any]] | None = None,
        on_signals: Callable[[list[Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.tmux = tmux
        self.roster = roster
        self.table = table
        self.supervisor = supervisor
        self.flow = flow
        self.boot_units = boot_units
        self.poll_interval_s = poll_interval_s
        # The runtimes' own signals (agent/hooks): read before the table decides states,
        # delivered before the screen's changes so a run keeps the runtime's id.
        self.drain_signals = drain_signals
        self.on_signals = on_signals
        # Held for a whole pass; `spawn` takes it so no pass sees a roster entry without its pane.
        self.lock = anyio.Lock()
        self.snapshots: list[SessionSnapshot] = []
        self._refreshed_at = 0.0

    async def poll_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a tmux hiccup must not stop the agent
                log.exception("discovery failed")
            await anyio.sleep(self.poll_interval_s)

    async def current(self, force: bool) -> list[SessionSnapshot]:
        """The snapshots at most poll_interval_s old (the poll loop keeps them so); a fresh
        pass if they are older or ``force`` (a command just changed the sessions)."""
        stale = time.monotonic() - self._refreshed_at > self.poll_interval_s
        return await self.refresh() if force or stale else self.snapshots

    async def refresh(self) -> list[SessionSnapshot]:
        async with self.lock:
            panes = await self.tmux.list_panes()
            procs = await anyio.to_thread.run_sync(ProcessTable.snapshot)
            primaries = primary_panes(panes)
            screens = await self._capture_screens(primaries)
            boot: dict[str, BootEnabled] = {}
            for spec in self.roster:
                boot[spec.name] = await self.boot_units.state(spec.unit)
            now = time.time()
            await self.supervisor.reconcile(panes, now)
            signals = self.drain_signals() if self.drain_signals else []
            snapshots, changes = self.table.update(panes, procs, screens, boot, now)
            if signals and self.on_signals is not None:
                await self.on_signals(signals)
            self.snapshots = snapshots
            self._refreshed_at = time.monotonic()
            skipped = self.table.skipped_names
            await self.flow.note_unrepresentable(skipped, now)
            await self.flow.ensure_pipes(
                {name: pane for name, pane in primaries.items() if name not in skipped}
            )
            await self.flow.collect(changes, now)
            return snapshots

    async def _capture_screens(self, primaries: dict[str, Pane]) -> dict[str, Screen]:
        screens: dict[str, Screen] = {}
        for name, pane in primaries.items():
            if not pane.dead:
                text = await self.tmux.capture(pane.pane_id)
                screens[name] = Screen(text.splitlines(), pane.title)
        return screens
