"""The evidence inbox: the weekly digest posted as a comment on an ever-open issue, once per
tenant and week, by the leader only.

Two ways in, one decision: the replica answering `fleet report weekly --post` offers the
report it built; and every replica's reactions runner hands over each newly stored
``report.weekly`` event, so the leader posts even when another replica answered (it builds
the week again from its own store). Once per week: a post made is recorded as a
``report.inbox`` event under ``inbox_key`` (remembered in memory too, for the moment
before the store has it), looked for before posting, under one lock. A failed post is
recorded under a key of its own (with the time), so a rerun of the timer tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import anyio

from controller.events.store.core import EventStore
from controller.events.system import Publish, system_event
from controller.fleet.statedb import StateDB
from controller.reactions.sinks import Deliveries, Message, Sink
from controller.reports.evidence import load_inputs
from controller.reports.render import daily_text, weekly_md
from controller.reports.weekly import weekly
from protocol.events import Event, EventLink, LinkType, Severity
from protocol.reports_api import WeeklyReport

log = logging.getLogger(__name__)

REPORT_HOST: Final = "controller"
REPORT_SESSION: Final = "reports"


def inbox_key(tenant: str | None, week: str) -> str:
    return f"report.inbox:{tenant or 'all'}:{week}"


def comment(report: WeeklyReport) -> str:
    """The comment: the weekly report in Markdown, its daily chart drawn in text."""
    return weekly_md(report, chart_text=daily_text(report))


class EvidenceInbox:
    def __init__(
        self,
        sink: Sink,
        store: EventStore,
        db: StateDB | None,
        tenants: Sequence[str],
        publish: Publish,
        counters: dict[str, int],
        leading: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.sink = sink
        self.store = store
        self.db = db
        self.tenants = sorted(tenants)
        self.publish = publish
        self.deliveries = Deliveries(counters, "inbox")
        self.leading = leading  # None: the only controller, which always leads
        self._posted: set[str] = set()
        self._lock = anyio.Lock()

    def stream_of(self, tenant: str | None) -> str:
        # The fleet-wide digest lives in the first tenant's stream, as report.weekly does.
        return tenant or self.tenants[0]

    async def on_report_event(self, event: Event) -> None:
        """A ``report.weekly`` event newly stored, by whichever replica made it."""
        week, tenant = event.payload.get("week"), event.payload.get("tenant")
        if event.host != REPORT_HOST or not isinstance(week, str):
            return
        await self.offer(week, tenant if isinstance(tenant, str) else None)

    async def offer(self, week: str, tenant: str | None, report: WeeklyReport | None = None) -> str:
        """Post the digest of ``week`` unless it was posted or this replica does not lead;
        what happened, in a few words (the `fleet report weekly` reply says it)."""
        key, stream = inbox_key(tenant, week), self.stream_of(tenant)
        async with self._lock:
            if key in self._posted or await anyio.to_thread.run_sync(self._stored, key, stream):
                self._posted.add(key)
                self.deliveries.count("already_posted")
                return f"already posted for {week}"
            if self.leading is not None and not await self.leading():
                self.deliveries.count("not_leader")
                return "left to the leader"
            if report is None:
                report = await anyio.to_thread.run_sync(self._build, week, tenant)
            title = f"Fleet weekly report {week} ({tenant or 'all tenants'})"
            out = await self.deliveries.send(self.sink, Message(title=title, text=comment(report)))
            if out.ok:
                self._posted.add(key)
            else:
                log.warning("evidence inbox: %s not posted: %s", week, out.detail)
            record = key if out.ok else f"{key}:failed:{time.time():.3f}"
            await self._record(record, stream, week, tenant, out.outcome, out.detail)
            where = f"{self.sink.kind.value} {self.sink.repo}#{self.sink.issue}"
            return f"{out.outcome} to {where} ({out.detail})"

    def _stored(self, key: str, stream: str) -> bool:
        return self.store.find_by_key(key, stream, REPORT_HOST, REPORT_SESSION) is not None

    def _build(self, week: str, tenant: str | None) -> WeeklyReport:
        return weekly(load_inputs(self.store, self.db, tenant), week, time.time(), tenant)

    async def _record(
        self, key: str, stream: str, week: str, tenant: str | None, outcome: str, detail: str
    ) -> None:
        # The sink's kind, repo and issue and the HTTP status: never a header or the token.
        cause = f"report.weekly:{tenant or 'all'}:{week}"
        payload = {
            "week": week,
            "tenant": tenant,
            "outcome": outcome,
            "detail": detail,
            "sink": self.sink.kind.value,
            "repo": self.sink.repo,
            "issue": self.sink.issue,
        }
        await self.publish(
            system_event(
                stream,
                REPORT_HOST,
                REPORT_SESSION,
                key,
                ts=time.time(),
                event_type="report.inbox",
                summary=f"weekly report {week}: inbox comment {outcome} ({detail})",
                provenance="evidence inbox",
                payload=payload,
                tags=["report", "report.inbox", f"week:{week}"],
                severity=Severity.INFO if outcome == "delivered" else Severity.WARNING,
                links=[EventLink(type=LinkType.CAUSED_BY, target=cause)],
            )
        )


def for_config(
    sink: Sink | None,
    store: EventStore,
    db: StateDB | None,
    tenants: Sequence[str],
    publish: Publish,
    counters: dict[str, int],
    leading: Callable[[], Awaitable[bool]] | None,
) -> EvidenceInbox | None:
    """The inbox of the controller config's ``evidence_inbox`` (None: no inbox)."""
    if sink is None:
        return None
    return EvidenceInbox(sink, store, db, tenants, publish, counters, leading)
