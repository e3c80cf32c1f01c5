"""Reactions at work: the rules file hot-reloaded, every decision recorded as an event, and
the actions run off the ingest path (a webhook POST with retries, or a canned reply sent to
the session as a command). docs/protocol.md, "Reactions"."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec

from common.config import ConfigError
from controller.events.system import Publish, system_event
from controller.fleet.state import FleetState
from controller.reactions.engine import Decision, ReactionEngine
from controller.reactions.rules import Action, ReactionsFile, filter_summary, load
from controller.reactions.sinks import Deliveries, Message
from protocol.commands import CommandRequest, CommandResult, Send
from protocol.events import Event, EventLink, LinkType, Severity

log = logging.getLogger(__name__)

SendCommand = Callable[[CommandRequest], Awaitable[CommandResult]]
MAX_JOBS = 10_000


PRIORITY = {Severity.WARNING: "high", Severity.ERROR: "urgent", Severity.CRITICAL: "urgent"}


def message(d: Decision) -> Message:
    """What a notify rule says about its event, in every sink's shape."""
    assert d.rule is not None
    e = d.event
    where = f"{e.tenant}/{e.host}/{e.session}"
    return Message(
        title=f"{d.rule.name}: {e.event_type} on {where}"[:200],
        text=f"{e.summary}\n\n{e.severity.value} · {where} · {e.event_type}",
        data={"rule": d.rule.name, "event": msgspec.to_builtins(e)},
        priority=PRIORITY.get(e.severity, "default"),
    )


@dataclass(frozen=True, slots=True)
class _Report:
    event: Event  # a report.weekly event, for the evidence inbox


class Reactions:
    def __init__(
        self, path: Path, state: FleetState, publish: Publish, command: SendCommand
    ) -> None:
        self.path = path
        self.state = state
        self.publish = publish
        self.command = command
        self.engine = ReactionEngine(wall=state.wall)
        self.counters = state.counters  # shown by `fleet status`
        self.deliveries = Deliveries(self.counters, "reaction")
        self._mtime: float | None = None
        self._jobs: deque[Event | Decision | _Report] = deque()  # events to record, actions to run
        self._wake = anyio.Event()
        # Replicas (issue 18): actions run only where this says so, asked right before each
        # (the fence: controller/replicas/election.py). Decisions are recorded everywhere,
        # under keys that make the copies one event.
        self.leading: Callable[[], Awaitable[bool]] | None = None
        # The evidence inbox (controller/reports/inbox.py) is handed each newly stored
        # report.weekly event, off the ingest path; it decides itself who posts.
        self.inbox: Callable[[Event], Awaitable[None]] | None = None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def reload(self) -> None:
        """Read the rules again if the file changed; a bad file keeps the rules in force."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        if mtime is None:
            self.engine.config = ReactionsFile()
            return
        try:
            self.engine.config = load(self.path)
        except ConfigError as exc:
            self.count("reaction_rules_invalid")
            log.warning("reactions: keeping the rules in force: %s", exc)
            return
        log.info("reactions: %d rules from %s", len(self.engine.config.rules), self.path)

    def _session_state(self, event: Event) -> str | None:
        entry = self.state.hosts.get((event.tenant, event.host))
        for snap in entry.sessions if entry else ():
            if snap.name == event.session:
                return snap.state.value
        return None

    async def on_stored(self, events: Sequence[Event], ids: Sequence[int | None]) -> None:
        self.reload()
        if self.inbox is not None:
            for event, row in zip(events, ids, strict=True):
                if row is not None and event.event_type == "report.weekly":
                    self._jobs.append(_Report(event))
                    self._wake.set()
        if not self.engine.config.rules and not any(e.attention_candidate for e in events):
            return
        for event, row in zip(events, ids, strict=True):
            if row is None:
                continue  # a duplicate was decided when it first came
            for decision in self.engine.decide(event, self._session_state(event)):
                self._record(decision)
                if decision.matched:
                    self._enqueue(decision)

    def _record(self, d: Decision) -> None:
        e = d.event
        cause = e.idempotency_key or f"{e.host}:{e.boot_id}:{e.seq}"
        rule = d.rule.name if d.rule else None
        kind = "match" if d.matched else "skip"
        payload = {
            "rule_name": rule,
            "session": f"{e.tenant}/{e.host}/{e.session}",
            "filter_summary": filter_summary(d.rule) if d.rule else None,
            "reason": d.reason,
            "candidate_count": d.candidates,
            "dedupe_key": d.dedupe_key or None,
        }
        self.count(f"reaction_{kind}")
        summary = f"{rule or 'no rule'} {kind}ed {e.event_type}" + (
            f" ({d.reason})" if d.reason else ""
        )
        self._send(
            system_event(
                e.tenant,
                e.host,
                e.session,
                f"reaction:{kind}:{rule}:{cause}",
                ts=self.state.wall(),
                event_type=f"reaction.{kind}",
                summary=summary,
                provenance="reaction rules",
                payload=payload,
                tags=["reaction", kind],
                links=[EventLink(type=LinkType.CAUSED_BY, target=cause)],
            )
        )

    def _send(self, event: Event) -> None:
        self._jobs.append(event)
        self._wake.set()

    def _enqueue(self, d: Decision) -> None:
        if len(self._jobs) >= MAX_JOBS:
            self.count("reaction_dead_letter")
            return
        self._jobs.append(d)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._jobs:
                job = self._jobs.popleft()
                try:
                    if isinstance(job, Event):
                        await self.publish(job)
                    elif isinstance(job, _Report):
                        if self.inbox is not None:
                            await self.inbox(job.event)
                    elif self.leading is not None and not await self.leading():
                        self.count("reaction_actions_not_leader")
                    elif job.rule is not None and job.rule.action is Action.NOTIFY:
                        await self._notify(job)
                    elif job.rule is not None:
                        await self._reply(job)
                except Exception as exc:  # one failed action must not stop the others
                    log.warning("reactions: %s failed: %s", type(job).__name__, exc)

    async def _notify(self, d: Decision) -> None:
        assert d.rule is not None and d.rule.sink is not None
        sink = self.engine.config.sinks.get(d.rule.sink)
        if sink is None:  # the rules changed since the decision
            self.deliveries.dead_letter()
            return
        out = await self.deliveries.send(sink, message(d))
        self._outcome(d, out.outcome, f"{sink.kind.value} {out.detail}")

    async def _reply(self, d: Decision) -> None:
        assert d.rule is not None and d.rule.reply is not None
        e = d.event
        result = await self.command(
            CommandRequest(
                target=f"{e.tenant}/{e.host}/{e.session}",
                body=Send(session=e.session, text=d.rule.reply, answer=d.rule.choice),
                issued_by=f"reaction:{d.rule.name}"[:128],
            )
        )
        self._outcome(d, result.outcome.value, result.message)

    def _outcome(self, d: Decision, outcome: str, detail: str) -> None:
        assert d.rule is not None
        e = d.event
        cause = e.idempotency_key or f"{e.host}:{e.boot_id}:{e.seq}"
        self._send(
            system_event(
                e.tenant,
                e.host,
                e.session,
                f"reaction:delivery:{d.rule.name}:{cause}",
                ts=self.state.wall(),
                event_type="reaction.delivery",
                summary=f"{d.rule.name}: {d.rule.action.value} {outcome} ({detail})"[:500],
                provenance="reaction rules",
                payload={"rule_name": d.rule.name, "outcome": outcome, "detail": detail},
                tags=["reaction", "delivery"],
                severity=Severity.INFO if outcome != "failed" else Severity.WARNING,
                links=[EventLink(type=LinkType.CAUSED_BY, target=cause)],
            )
        )
