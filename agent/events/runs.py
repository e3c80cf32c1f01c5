"""Run lifecycle: one `run.state` event per transition of a session's run — start, complete,
cancel_requested, cancelled, error — whether the runtime said so (emission contract) or the
host agent saw it (screen state), never both for the same transition.

Observation waits: a screen that goes back to idle ends the run only if the runtime has not
said how it ended within END_GRACE_S (its own event is the better witness).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from protocol.heartbeat import SessionState

END_GRACE_S = 3.0
CONTRACT_ENDS = {"run.completed": "complete", "run.cancelled": "cancelled", "run.error": "error"}


@dataclass
class _Run:
    run_id: str
    started_at: float
    states: set[str] = field(default_factory=set)
    idle_at: float | None = None  # the screen went idle; waiting for the runtime's word


@dataclass(frozen=True, slots=True)
class RunState:
    session: str
    run_id: str
    state: str
    source: str  # "contract", "screen" or "command"
    at: float


@dataclass
class RunTracker:
    runs: dict[str, _Run] = field(default_factory=dict)
    ended: dict[str, tuple[str, float]] = field(default_factory=dict)  # session -> (run, at)

    def _transition(
        self, session: str, run: _Run, state: str, source: str, at: float
    ) -> list[RunState]:
        if state in run.states:
            return []
        run.states.add(state)
        out = [RunState(session, run.run_id, state, source, at)]
        if state in ("complete", "cancelled", "error"):
            del self.runs[session]
            self.ended[session] = (run.run_id, at)
        return out

    def _start(self, session: str, run_id: str | None, source: str, at: float) -> list[RunState]:
        run = _Run(run_id or f"obs-{uuid.uuid4().hex[:8]}", at)
        self.runs[session] = run
        return self._transition(session, run, "start", source, at)

    def on_contract(
        self, session: str, event_type: str, run_id: str | None, at: float
    ) -> list[RunState]:
        run = self.runs.get(session)
        if event_type == "run.started":
            if run is not None and run.run_id.startswith("obs-") and at - run.started_at < 10:
                run.run_id = run_id or run.run_id  # the screen saw it first: same run
                return []
            if run is not None and run.run_id == run_id:
                return []
            return self._start(session, run_id, "contract", at)
        if event_type in CONTRACT_ENDS:
            last = self.ended.get(session)
            if run is None and last and (last[0] == run_id or at - last[1] < 10):
                return []  # the end of a run already reported (e.g. by the cancel command)
            if run is None:
                run = _Run(run_id or f"obs-{uuid.uuid4().hex[:8]}", at)
                self.runs[session] = run
                run.states.add("start")
            return self._transition(session, run, CONTRACT_ENDS[event_type], "contract", at)
        return []

    def on_screen(
        self, session: str, old: SessionState, new: SessionState, at: float
    ) -> list[RunState]:
        run = self.runs.get(session)
        busy = (SessionState.WORKING, SessionState.BLOCKED)
        if new in busy and old not in busy:
            if run is None:
                return self._start(session, None, "screen", at)
            run.idle_at = None
            return []
        if new is SessionState.IDLE and run is not None:
            run.idle_at = at
        return []

    def on_command(self, session: str, state: str, at: float) -> list[RunState]:
        run = self.runs.get(session)
        if run is None:
            return []
        return self._transition(session, run, state, "command", at)

    def tick(self, at: float) -> list[RunState]:
        out: list[RunState] = []
        for session, run in list(self.runs.items()):
            if run.idle_at is not None and at - run.idle_at >= END_GRACE_S:
                out += self._transition(session, run, "complete", "screen", run.idle_at)
        return out

    def current(self, session: str) -> str | None:
        run = self.runs.get(session)
        return run.run_id if run else None
