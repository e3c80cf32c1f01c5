"""The host agent's seam for hook signals: one object the daemon drains once per pass.

receiver = HookReceiver(state_dir)          # at startup, after private_dir(state_dir)
for sig, m in receiver.drain():             # each discovery pass
    event = to_event(sig, m, ..., run_id=runs.current(sig.session))
resolved = receiver.resolve(session, screen_view, now)   # hook > screen > title
receiver.forget(session)                    # relaunch / kill: the old hooks are moot
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.hooks.inbox import HookInbox, HookSignal
from agent.hooks.signals import HookState, Resolved, ScreenView, newer, resolve
from agent.hooks.translate import Meaning, meaning, to_event
from agent.hooks.wiring import spool_dir, wire
from agent.uid import Identity
from protocol.heartbeat import SessionState

if TYPE_CHECKING:
    from agent.config import SessionSpec
    from agent.events.emitter import Emitter
    from agent.events.origin import Origin
    from agent.events.runs import RunTracker
    from protocol.events import Event

RUN_SIGNALS = ("run.started", "run.completed")


class HookReceiver:
    def __init__(self, state_dir: Path) -> None:
        # The launch creates the directory, owned by the sessions' user (wiring.wire); made
        # before any launch, the inbox reads spools already there from their end.
        self.inbox = HookInbox(spool_dir(state_dir))
        self.states: dict[str, HookState] = {}
        self.screens: dict[str, ScreenView] = {}  # the screen's state per session, and since
        self.last: dict[str, Resolved] = {}

    def drain(self) -> list[tuple[HookSignal, Meaning]]:
        out = []
        for sig in self.inbox.drain():
            m = meaning(sig)
            if m.state is not None:
                state = HookState(m.state, sig.seq, sig.at, f"{sig.runtime}:{sig.event}")
                self.states[sig.session] = newer(self.states.get(sig.session), state)
            out.append((sig, m))
        return out

    def state(self, session: str) -> HookState | None:
        return self.states.get(session)

    def resolve(self, session: str, screen: ScreenView, now: float) -> Resolved:
        resolved = resolve(self.states.get(session), screen, now)
        self.last[session] = resolved
        return resolved

    def decide(self, session: str, screen: SessionState, now: float) -> SessionState:
        """agent.discovery.sessions.SignalSource: the state, given the screen's. Keeps when
        the screen's state began, so a later screen change can overtake a hook."""
        seen = self.screens.get(session)
        if seen is None or seen.state is not screen:
            seen = ScreenView(screen, now)
            self.screens[session] = seen
        return self.resolve(session, seen, now).state

    def explain(self, session: str) -> Resolved | None:
        """What decided the session's state last (for `fleet explain`)."""
        return self.last.get(session)

    def account(self, session: str) -> tuple[Resolved | None, HookState | None]:
        """`fleet explain`'s view (Operations' `signals`): the last pass's decision, and the
        latest hook state it weighed (seq, when, which event), if any."""
        return self.last.get(session), self.states.get(session)

    def forget(self, session: str) -> None:
        """A relaunch or a kill: what the old process said no longer holds."""
        self.states.pop(session, None)
        self.screens.pop(session, None)
        self.last.pop(session, None)


def prompt_acks(drained: list[tuple[HookSignal, Meaning]]) -> list[tuple[str, float]]:
    """(session, at) of each prompt the runtime took: `Steering.acknowledge` counts them as
    proof that a sent prompt landed. A start (Claude's UserPromptSubmit, pi's agent_start), or
    a turn that ended after the send (Codex's notify is its only signal: a quick answer ends
    before a screen poll ever reads it working). A send to a busy session answers `queued`
    before any proof is sought, so a turn ending after a send is the sent prompt's."""
    taken = ("run.started", "run.completed")
    return [(sig.session, sig.at) for sig, m in drained if m.event_type in taken]


def hook_events(
    drained: list[tuple[HookSignal, Meaning]], origin: Origin, runs: RunTracker
) -> list[Event]:
    """The outbox events for drained signals: each signal's own event, and the `run.state`
    transitions it causes (a hook is the runtime's word, like an emitted `run.started`)."""
    from agent.events.flow import run_events  # the same run.state shape as every source

    out: list[Event] = []
    for sig, m in drained:
        transitions = []
        if m.event_type in RUN_SIGNALS:
            transitions = runs.on_contract(sig.session, m.event_type, m.run_id, sig.at)
        # One run id per run: the tracker's (it adopts the runtime's on run.started).
        run_id = runs.current(sig.session) or next((t.run_id for t in transitions), None)
        event = to_event(
            sig,
            m,
            tenant=origin.tenant,
            host=origin.host,
            boot_id=origin.boot_id,
            run_id=run_id or m.run_id,
        )
        if event is not None:
            out.append(event)
        out += run_events(origin, transitions)
    return out


Prepare = Callable[
    ["SessionSpec", str | list[str], dict[str, str]], tuple[str | list[str], dict[str, str]]
]


def preparer(state_dir: Path, run_as: Identity | None, receiver: HookReceiver | None) -> Prepare:
    """The launcher's hook step: wire the runtime's hooks in, forget the old process's word."""

    def prepare(
        spec: SessionSpec, command: str | list[str], env: dict[str, str]
    ) -> tuple[str | list[str], dict[str, str]]:
        if receiver is not None:
            receiver.forget(spec.name)
        return wire(spec.runtime, spec.name, state_dir, command, env, run_as)

    return prepare


async def deliver_signals(
    drained: list[tuple[HookSignal, Meaning]],
    *,
    origin: Origin,
    runs: RunTracker,
    emitter: Emitter,
    acknowledge: Callable[[str, float], None] | None = None,
) -> None:
    """One pass's signals to where they count: the outbox (their events, run transitions)
    and the steering's proof that a sent prompt landed."""
    if acknowledge is not None:
        for session, at in prompt_acks(drained):
            acknowledge(session, at)
    await emitter.emit(hook_events(drained, origin, runs))
