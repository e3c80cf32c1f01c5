"""The controller's evidence verbs: report.baseline, report.weekly, metrics.

Reports run in a worker thread over read-only connections; the metrics they answer with are
the controller's one ``FleetMetrics``, fed by the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import anyio
import msgspec

from controller.events.store.core import EventStore, StoreError
from controller.events.system import Publish, system_event
from controller.fleet.state import FleetState
from controller.fleet.statedb import StateDB
from controller.reports.evidence import baseline, load_inputs
from controller.reports.inbox import REPORT_HOST, REPORT_SESSION, EvidenceInbox
from controller.reports.metrics import FleetMetrics
from controller.reports.render import fmt, fmt_change
from controller.reports.weekly import weekly
from protocol import encode
from protocol.api import ApiError, ErrorCode
from protocol.reports_api import (
    BaselineReply,
    BaselineReport,
    BaselineRequest,
    Count,
    MetricsReply,
    MetricsRequest,
    WeeklyReply,
    WeeklyReport,
    WeeklyRequest,
)

REPLY_BUDGET_BYTES: Final = 768 * 1024


def weekly_key(tenant: str | None, week: str) -> str:
    return f"report.weekly:{tenant or 'all'}:{week}"


def digest(report: WeeklyReport) -> tuple[str, dict[str, Any]]:
    """The summary line and payload of the report.weekly event: the operator's inbox entry."""
    totals = {t.metric: t for t in report.trends if t.group == "total"}
    rate = totals["completion_rate"]
    summary = (
        f"weekly report {report.week} ({report.tenant or 'all tenants'}): "
        f"{report.current.totals.runs} runs, {fmt(rate.current, 'completion_rate')} completed "
        f"({fmt_change(rate.change, 'completion_rate')} vs {report.previous_week}), "
        f"{totals['validation_errors'].current:.0f} validation errors, "
        f"{report.current.sequence_gaps} sequence gaps, "
        f"{len(report.current.host_down)} host down periods"
    )
    payload = {
        "week": report.week,
        "previous_week": report.previous_week,
        "tenant": report.tenant,
        "totals": {m: {"current": t.current, "change": t.change} for m, t in totals.items()},
        "new_validation_reasons": [c.key for c in report.new_validation_reasons[:5]],
        "operator_sessions": [t.key for t in report.operator_sessions[:5]],
    }
    return summary, payload


def _fit_baseline(report: BaselineReport) -> BaselineReport:
    # The per-session listing is the one that grows with the fleet; drop it first.
    if len(encode(report)) <= REPLY_BUDGET_BYTES or not report.by_session:
        return report
    cut = Count(key="by_session", count=len(report.by_session))
    return msgspec.structs.replace(report, by_session=[], truncated=[*report.truncated, cut])


def session_runtime(state: FleetState, tenant: str, host: str, session: str) -> str:
    """The runtime a session is configured with (else seen running), for metric labels."""
    entry = state.hosts.get((tenant, host))
    for snap in entry.sessions if entry is not None else ():
        if snap.name == session:
            return snap.runtime_configured or snap.runtime_observed or "unknown"
    return "unknown"


def external_counters(state: FleetState, store: EventStore) -> dict[str, float]:
    """The counters metrics read from elsewhere: fleet state's, and the store's gap total."""
    try:
        gaps = store.total_gaps()
    except StoreError:
        gaps = 0  # the store is not open yet (or any more): nothing to count
    return {**state.counters, "sequence_gaps": gaps}


class ReportApi:
    def __init__(
        self,
        store: EventStore,
        db: StateDB,
        tenants: Sequence[str],
        publish: Publish,
        metrics: FleetMetrics,
    ) -> None:
        self.store = store
        self.db = db
        self.tenants = list(tenants)
        self.publish = publish
        self.fleet_metrics = metrics
        self.inbox: EvidenceInbox | None = None  # the weekly digest as an issue comment

    async def baseline(self, req: BaselineRequest) -> BaselineReply:
        def build() -> BaselineReport:
            inputs = load_inputs(self.store, self.db, req.tenant)
            return baseline(inputs, req.since, req.until, req.tenant)

        return BaselineReply(report=_fit_baseline(await anyio.to_thread.run_sync(build)))

    async def weekly(self, req: WeeklyRequest) -> WeeklyReply | ApiError:
        tenants = self.tenants
        if req.tenant is not None and req.tenant not in tenants:
            return ApiError(code=ErrorCode.BAD_REQUEST, message=f"unknown tenant {req.tenant!r}")

        def build() -> WeeklyReport:
            inputs = load_inputs(self.store, self.db, req.tenant)
            return weekly(inputs, req.week, time.time(), req.tenant)

        try:
            report = await anyio.to_thread.run_sync(build)
        except ValueError as exc:
            return ApiError(code=ErrorCode.BAD_REQUEST, message=str(exc))
        report = msgspec.structs.replace(report, current=_fit_baseline(report.current))
        key = inbox = None
        if req.post:
            # One event per tenant and week (the key dedupes reruns); the fleet-wide digest
            # goes into the first tenant's stream, since every event belongs to a stream.
            key = weekly_key(req.tenant, report.week)
            await self.post(req.tenant or sorted(tenants)[0], key, report)
            if self.inbox is not None:
                inbox = await self.inbox.offer(report.week, req.tenant, report)
        return WeeklyReply(report=report, event_key=key, inbox=inbox)

    async def post(self, tenant: str, key: str, report: WeeklyReport) -> None:
        summary, payload = digest(report)
        event = system_event(
            tenant,
            REPORT_HOST,
            REPORT_SESSION,
            key,
            ts=time.time(),
            event_type="report.weekly",
            summary=summary,
            tags=["report", "report.weekly", f"week:{report.week}"],
            payload=payload,
            provenance="fleet report weekly",
        )
        await self.publish(event)

    async def metrics(self, _req: MetricsRequest) -> MetricsReply:
        metrics = self.fleet_metrics
        text = await anyio.to_thread.run_sync(metrics.render_prometheus)
        snapshot = await anyio.to_thread.run_sync(metrics.snapshot)
        return MetricsReply(text=text, snapshot=snapshot)
