"""From what the panes print and show to events in the outbox: pipes, pane logs, screen-state
changes and run transitions. The discovery pass calls it once per pass."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping

import anyio

from agent.control.leases import TakeoverLeases
from agent.discovery.roster import Roster
from agent.discovery.runtimes import RuntimeSpec
from agent.discovery.sessions import StateChange
from agent.discovery.tmux import Pane, Tmux
from agent.events.capture import CaptureSet, log_path, pipe_command
from agent.events.origin import Origin
from agent.events.outbox import Outbox, OutboxFull
from agent.events.publisher import Wakeup
from agent.events.runs import RunState, RunTracker
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END, to_event
from protocol.events import Event, Severity, SourceKind

log = logging.getLogger(__name__)


def state_event(origin: Origin, change: StateChange) -> Event:
    match = change.match
    return origin.event(
        change.session,
        "session.state",
        f"{change.session}: {change.old.value} -> {change.new.value}",
        SourceKind.SYSTEM,
        ts=change.at,
        provenance="screen",
        payload={
            "old": change.old.value,
            "new": change.new.value,
            "rule": match.rule if match else None,
            "line": match.line if match else None,
        },
    )


def run_events(origin: Origin, transitions: list[RunState]) -> list[Event]:
    source = {"command": SourceKind.OPERATOR}
    return [
        origin.event(
            t.session,
            "run.state",
            f"{t.session}: run {t.run_id} {t.state} (from {t.source})",
            source.get(t.source, SourceKind.SYSTEM),
            ts=t.at,
            run_id=t.run_id,
            provenance=t.source,
            payload={"state": t.state, "source": t.source},
        )
        for t in transitions
    ]


class EventFlow:
    def __init__(
        self,
        *,
        origin: Origin,
        outbox: Outbox,
        wakeup: Wakeup,
        capture: CaptureSet,
        runs: RunTracker,
        takeovers: TakeoverLeases,
        tmux: Tmux,
        roster: Roster,
        runtimes: Mapping[str, RuntimeSpec],
        capture_unmanaged: bool = False,
        acknowledge: Callable[[str, float, str], None] | None = None,
    ) -> None:
        self.origin = origin
        self.outbox = outbox
        self.wakeup = wakeup
        self.capture = capture
        self.runs = runs
        self.takeovers = takeovers
        self.tmux = tmux
        self.roster = roster
        self.runtimes = runtimes
        self.capture_unmanaged = capture_unmanaged
        # The steering's proof that a sent prompt landed (Steering.acknowledge).
        self.acknowledge = acknowledge
        self._unrepresentable: set[str] = set()  # reported once per agent run

    async def note_unrepresentable(self, names: set[str], now: float) -> None:
        """A session whose name cannot be a subject token (made by hand: `_holder`, `a b`) is
        not tracked, but never silently: one `session.unrepresentable` event each, under a
        stable stand-in id (`unnamed-<sha256 of the name, 8 hex>`), the real name in the payload."""
        new = sorted(names - self._unrepresentable)
        if not new:
            return
        self._unrepresentable.update(new)
        events = []
        for name in new:
            stand_in = "unnamed-" + hashlib.sha256(name.encode()).hexdigest()[:8]
            log.warning("session %r: its name cannot be an id; reported as %s", name, stand_in)
            events.append(
                self.origin.event(
                    stand_in,
                    "session.unrepresentable",
                    f"a session named {name[:60]!r} cannot be tracked: rename it to "
                    "[A-Za-z0-9][A-Za-z0-9_-]{0,63}",
                    SourceKind.SYSTEM,
                    ts=now,
                    severity=Severity.WARNING,
                    payload={"name": name[:200]},
                )
            )
        await anyio.to_thread.run_sync(lambda: self.outbox.append(events, droppable=True))
        self.wakeup.set()

    async def ensure_pipes(self, primaries: Mapping[str, Pane]) -> None:
        """Each managed session's first pane piped to its log, and the log read from where it
        was. A session not in the roster is listed, not recorded: what someone opened by hand
        (secrets typed or printed included) is not ours to store unless `capture_unmanaged`."""
        for name, pane in primaries.items():
            spec = self.roster.get(name)
            if spec is None and not self.capture_unmanaged:
                continue
            runtime = self.runtimes.get(spec.runtime if spec else "")
            begin = runtime.events_begin if runtime else DEFAULT_BEGIN
            end = runtime.events_end if runtime else DEFAULT_END
            if name not in self.capture.logs:
                persisted = await anyio.to_thread.run_sync(self.outbox.offset, name)
                # Tracking replays the log's tail into the pane's emulated screen: a thread.
                size = (pane.width, pane.height)
                await anyio.to_thread.run_sync(
                    self.capture.track, name, begin, end, persisted, size
                )
            else:
                self.capture.logs[name].resize(pane.width, pane.height)
            if not pane.piped and not pane.dead:
                path = log_path(self.capture.logs_dir, name)
                await self.tmux.pipe_to(pane.pane_id, pipe_command(path))

    async def collect(self, changes: list[StateChange], now: float) -> None:
        await self.takeovers.expire(now)  # one lease.expired event each
        for change in changes:
            log.info("session %s: %s -> %s", change.session, change.old.value, change.new.value)
        states = [state_event(self.origin, c) for c in changes]
        for change in changes:
            states += run_events(
                self.origin, self.runs.on_screen(change.session, change.old, change.new, change.at)
            )
        states += run_events(self.origin, self.runs.tick(now))
        if states:
            await anyio.to_thread.run_sync(lambda: self.outbox.append(states, droppable=True))
        if not await self._emissions(now) and states:
            self.wakeup.set()  # else _emissions woke it (or the outbox is full)

    async def _emissions(self, now: float) -> bool:
        """The pane logs' new emissions into the outbox with their offsets; False if the logs
        had nothing new."""
        before = self.capture.offsets()
        results = await anyio.to_thread.run_sync(self.capture.read_all, now)
        o = self.origin
        drafts = [
            to_event(r, tenant=o.tenant, host=o.host, session=name, boot_id=o.boot_id, ts=now)
            for name, rs in results.items()
            for r in rs
        ]
        run_drafts: list[Event] = []
        for draft in drafts:
            if draft.source_kind is SourceKind.AGENT:
                transitions = self.runs.on_contract(
                    draft.session, draft.event_type, draft.run_id, draft.ts
                )
                run_drafts.extend(run_events(o, transitions))
                if draft.event_type == "run.started" and self.acknowledge is not None:
                    self.acknowledge(draft.session, draft.ts, "run.started")
        drafts += run_drafts
        after = self.capture.offsets()
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        if not drafts and not changed:
            return False
        try:
            await anyio.to_thread.run_sync(lambda: self.outbox.append(drafts, changed))
        except OutboxFull as exc:
            # Hold the output back in the pane logs until the outbox drains.
            for name, (_, offset) in before.items():
                self.capture.logs[name].rewind(offset)
            self.outbox.bump("held_back_full")
            log.warning("%s; pane output waits in the logs", exc)
            return True
        self.wakeup.set()
        return True
