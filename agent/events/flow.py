"""From what the panes print and show to events in the outbox: pipes, pane logs, screen-state
changes and run transitions. The host agent calls it once per discovery pass."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from agent.discovery.sessions import StateChange
from agent.discovery.tmux import Pane
from agent.events.capture import log_path, pipe_command
from agent.events.outbox import OutboxFull
from agent.events.runs import RunState
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END, to_event
from protocol.events import Event, SourceKind

if TYPE_CHECKING:
    from agent.daemon import HostAgent

log = logging.getLogger(__name__)


class EventFlow:
    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent

    async def ensure_pipes(self, panes: list[Pane]) -> None:
        first: dict[str, Pane] = {}
        for pane in sorted(panes, key=lambda p: (p.session, p.window_index, p.pane_index)):
            first.setdefault(pane.session, pane)
        for name, pane in first.items():
            if name in self.agent.table.skipped_names:  # type: ignore[union-attr]
                continue
            spec = self.agent.table.spec(name) if self.agent.table else None
            runtime = self.agent.runtimes.get(spec.runtime if spec else "")
            begin = runtime.events_begin if runtime else DEFAULT_BEGIN
            end = runtime.events_end if runtime else DEFAULT_END
            if name not in self.agent.capture.logs:
                persisted = await anyio.to_thread.run_sync(self.agent.outbox.offset, name)
                self.agent.capture.track(name, begin, end, persisted)
            if not pane.piped and not pane.dead:
                path = log_path(self.agent.capture.logs_dir, name)
                await self.agent.tmux.pipe_to(pane.pane_id, pipe_command(path))

    def _state_event(self, change: StateChange) -> Event:
        match = change.match
        return Event(
            tenant=self.agent.config.tenant,
            host=self.agent.host,
            session=change.session,
            boot_id=self.agent.clock.boot_id,
            seq=0,
            ts=change.at,
            event_type="session.state",
            summary=f"{change.session}: {change.old.value} -> {change.new.value}",
            source_kind=SourceKind.SYSTEM,
            provenance="screen",
            payload={
                "old": change.old.value,
                "new": change.new.value,
                "rule": match.rule if match else None,
                "line": match.line if match else None,
            },
        )

    def run_events(self, transitions: list[RunState]) -> list[Event]:
        source = {"command": SourceKind.OPERATOR}
        return [
            Event(
                tenant=self.agent.config.tenant,
                host=self.agent.host,
                session=t.session,
                boot_id=self.agent.clock.boot_id,
                seq=0,
                ts=t.at,
                event_type="run.state",
                summary=f"{t.session}: run {t.run_id} {t.state} (from {t.source})",
                source_kind=source.get(t.source, SourceKind.SYSTEM),
                run_id=t.run_id,
                provenance=t.source,
                payload={"state": t.state, "source": t.source},
            )
            for t in transitions
        ]

    async def collect(self, changes: list[StateChange], now: float) -> None:
        for session, lease in self.agent.takeovers.expire(now):
            await self.agent.ops.lease_event(session, "lease.expired", lease, lease.holder)
        for change in changes:
            log.info("session %s: %s -> %s", change.session, change.old.value, change.new.value)
        states = [self._state_event(c) for c in changes]
        for change in changes:
            states += self.run_events(
                self.agent.runs.on_screen(change.session, change.old, change.new, change.at)
            )
        states += self.run_events(self.agent.runs.tick(now))
        if states:
            await anyio.to_thread.run_sync(lambda: self.agent.outbox.append(states, droppable=True))
        before = self.agent.capture.offsets()
        run_drafts: list[Event] = []
        results = await anyio.to_thread.run_sync(self.agent.capture.read_all, now)
        drafts = [
            to_event(
                r,
                tenant=self.agent.config.tenant,
                host=self.agent.host,
                session=name,
                boot_id=self.agent.clock.boot_id,
                ts=now,
            )
            for name, rs in results.items()
            for r in rs
        ]
        for draft in drafts:
            if draft.source_kind is SourceKind.AGENT:
                drafts_runs = self.agent.runs.on_contract(
                    draft.session, draft.event_type, draft.run_id, draft.ts
                )
                run_drafts.extend(self.run_events(drafts_runs))
        drafts += run_drafts
        after = self.agent.capture.offsets()
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        if not drafts and not changed:
            if states:
                self.agent.wakeup.set()
            return
        try:
            await anyio.to_thread.run_sync(lambda: self.agent.outbox.append(drafts, changed))
        except OutboxFull as exc:
            # Hold the output back in the pane logs until the outbox drains.
            for name, (_, offset) in before.items():
                self.agent.capture.logs[name].rewind(offset)
            self.agent.outbox.bump("held_back_full")
            log.warning("%s; pane output waits in the logs", exc)
            return
        self.agent.wakeup.set()
