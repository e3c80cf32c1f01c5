"""The host agent's view of its sessions: roster + what tmux shows → SessionSnapshots.

Pure bookkeeping: the daemon feeds it panes, process trees and screens each tick; it keeps
what must survive between ticks (state trackers, since-times, restart counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.config import SessionSpec
from agent.discovery.detect import Match, StateTracker
from agent.discovery.procs import ProcessTable, zombie_wait_status
from agent.discovery.roster import Roster
from agent.discovery.runtimes import RuntimeSpec, observed_runtime
from agent.discovery.tmux import Pane
from protocol.heartbeat import BootEnabled, PaneState, SessionKind, SessionSnapshot, SessionState
from protocol.ids import IdError, validate_session


@dataclass(frozen=True, slots=True)
class Screen:
    lines: list[str]
    title: str


@dataclass(frozen=True, slots=True)
class StateChange:
    session: str
    old: SessionState
    new: SessionState
    at: float
    match: Match | None


@dataclass
class _Tracked:
    state: SessionState = SessionState.UNKNOWN
    since: float | None = None
    tracker: StateTracker | None = None
    restarts: int = 0


class SignalSource(Protocol):
    """What a live session's runtime says about itself (its hooks), next to its screen."""

    def decide(self, session: str, screen: SessionState, now: float) -> SessionState:
        """The session's state, given the one its screen shows."""
        ...


def primary_panes(panes: Sequence[Pane]) -> dict[str, Pane]:
    """The first pane (lowest window, then pane index) of each session."""
    out: dict[str, Pane] = {}
    for pane in sorted(panes, key=lambda p: (p.session, p.window_index, p.pane_index)):
        out.setdefault(pane.session, pane)
    return out


def exit_of(pane: Pane | None) -> tuple[int | None, int | None]:
    """A dead pane's (exit status, signal): tmux's, or the unreaped zombie's when tmux has
    none (see zombie_wait_status)."""
    if pane is None or not pane.dead:
        return None, None
    if pane.dead_status is not None or pane.dead_signal is not None or pane.pid is None:
        return pane.dead_status, pane.dead_signal
    status = zombie_wait_status(pane.pid)
    if status is None:
        return None, None
    if status & 0x7F:
        return None, status & 0x7F
    return (status >> 8) & 0xFF, None


@dataclass
class SessionTable:
    roster: Roster
    runtimes: Mapping[str, RuntimeSpec]
    signals: SignalSource | None = None  # None: the screen alone decides
    _tracked: dict[str, _Tracked] = field(default_factory=dict)
    skipped_names: set[str] = field(default_factory=set)

    def spec(self, name: str) -> SessionSpec | None:
        return self.roster.get(name)

    def note_restart(self, name: str) -> None:
        self._tracked.setdefault(name, _Tracked()).restarts += 1

    def last_match(self, name: str) -> Match | None:
        tracked = self._tracked.get(name)
        return tracked.tracker.last_match if tracked and tracked.tracker else None

    def _observe(
        self,
        name: str,
        runtime: str | None,
        state: SessionState | None,
        screen: Screen | None,
        now: float,
    ) -> tuple[SessionState, float, StateChange | None]:
        tracked = self._tracked.setdefault(name, _Tracked())
        if state is None:  # alive pane: the screen decides, unless the signals outrank it
            spec = self.runtimes.get(runtime or "")
            if spec is None or screen is None:
                state = SessionState.UNKNOWN
            else:
                if tracked.tracker is None or tracked.tracker.rules is not spec.rules:
                    tracked.tracker = StateTracker(spec.rules)
                state, _ = tracked.tracker.observe(screen.lines, screen.title, now)
            if self.signals is not None:
                state = self.signals.decide(name, state, now)
        change = None
        if state is not tracked.state or tracked.since is None:
            match = tracked.tracker.last_match if tracked.tracker else None
            if tracked.since is not None:
                change = StateChange(name, tracked.state, state, now, match)
            tracked.state, tracked.since = state, now
        return state, tracked.since, change

    def update(
        self,
        panes: Sequence[Pane],
        procs: ProcessTable,
        screens: Mapping[str, Screen],
        boot: Mapping[str, BootEnabled],
        now: float,
    ) -> tuple[list[SessionSnapshot], list[StateChange]]:
        by_name = primary_panes(panes)
        snapshots: list[SessionSnapshot] = []
        changes: list[StateChange] = []
        roster_names = self.roster.names()
        for spec in self.roster:
            pane = by_name.get(spec.name)
            snap, change = self._snapshot(spec.name, spec, pane, procs, screens, boot, now)
            snapshots.append(snap)
            if change:
                changes.append(change)
        for name, pane in by_name.items():
            if name in roster_names:
                continue
            try:
                validate_session(name)
            except IdError:
                # A session someone made by hand with a name that cannot be a subject token.
                self.skipped_names.add(name)
                continue
            snap, change = self._snapshot(name, None, pane, procs, screens, boot, now)
            snapshots.append(snap)
            if change:
                changes.append(change)
        for gone in set(self._tracked) - roster_names - set(by_name):
            del self._tracked[gone]
        return snapshots, changes

    def _snapshot(
        self,
        name: str,
        spec: SessionSpec | None,
        pane: Pane | None,
        procs: ProcessTable,
        screens: Mapping[str, Screen],
        boot: Mapping[str, BootEnabled],
        now: float,
    ) -> tuple[SessionSnapshot, StateChange | None]:
        observed: str | None = None
        if pane is None:
            pane_state, fixed = PaneState.MISSING, SessionState.MISSING
        elif pane.dead:
            pane_state, fixed = PaneState.DEAD, SessionState.EXITED
        else:
            pane_state, fixed = PaneState.ALIVE, None
            if pane.pid is not None:
                observed = observed_runtime(procs.tree_cmdlines(pane.pid), self.runtimes)
        exit_status, exit_signal = exit_of(pane)
        detect_runtime = spec.runtime if spec else observed
        state, since, change = self._observe(name, detect_runtime, fixed, screens.get(name), now)
        snap = SessionSnapshot(
            name=name,
            runtime_configured=spec.runtime if spec else None,
            runtime_observed=observed,
            kind=spec.kind if spec else SessionKind.CORE,
            managed=spec is not None,
            pane=pane_state,
            pid=pane.pid if pane else None,
            state=state,
            state_since=since,
            last_output_at=pane.activity if pane else None,
            boot_enabled=boot.get(name, BootEnabled.UNKNOWN),
            exit_status=exit_status,
            exit_signal=exit_signal,
            restarts=self._tracked[name].restarts,
        )
        return snap, change
