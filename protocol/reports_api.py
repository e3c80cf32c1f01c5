"""The controller's evidence API (fleet.ctl.report.*, fleet.ctl.metrics) and the reports it
returns. Every figure that may have no data (a rate over zero runs, a percentile of nothing)
is ``None``, never a made-up zero."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.codec import Message
from protocol.events_api import SeqGap


class Count(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    count: int


class RunRates(msgspec.Struct, frozen=True, kw_only=True):
    """Run outcomes of one group (a tenant, host, session, runtime, or everything)."""

    key: str
    runs: int
    completed: int
    errored: int
    cancelled: int
    completion_rate: float | None
    error_rate: float | None
    cancel_rate: float | None


class Percentiles(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    p50: float | None
    p95: float | None


class Compliance(msgspec.Struct, frozen=True, kw_only=True):
    """How much of what agents should emit they emitted themselves (vs synthesized)."""

    run_completions_emitted: int
    run_completions_synthesized: int
    run_completions_emitted_share: float | None
    tool_results_emitted: int
    tool_results_synthesized: int
    tool_results_emitted_share: float | None


class DownPeriod(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    host: str
    down_at: float
    up_at: float | None  # None: still down (as far as the state store knows)
    duration_s: float | None
    detection_s: float | None  # silence before the controller declared it down


class ReactionRates(msgspec.Struct, frozen=True, kw_only=True):
    """Reaction decisions in the range, from the stored ``reaction.*`` events: one decision
    per (event, candidate rule), or one ``no_rule`` skip for an attention candidate."""

    decisions: int = 0
    matched: int = 0
    skipped: int = 0
    match_rate: float | None = None  # of decisions
    skip_rate: float | None = None
    skip_reasons: list[Count] = []  # most frequent first
    delivered: int = 0  # reaction.delivery outcomes
    failed: int = 0


class BaselineReport(msgspec.Struct, frozen=True, kw_only=True):
    since: float | None
    until: float | None
    tenant: str | None
    events: int
    totals: RunRates
    by_tenant: list[RunRates]
    by_host: list[RunRates]  # key: tenant/host
    by_session: list[RunRates]  # key: tenant/host/session
    by_runtime: list[RunRates]
    cancel_latency_ms: Percentiles
    command_round_trip_ms: Percentiles
    compliance: Compliance
    validation_errors: list[Count]  # by payload.reason
    events_by_type: list[Count]
    events_by_source: list[Count]
    synthesized_by_rule: list[Count]
    commands: list[Count]  # key: verb:outcome
    operator_action_sessions: list[Count]  # key: tenant/host/session
    sequence_gaps: int
    gap_boots: list[SeqGap]
    host_down: list[DownPeriod]
    detection_s: Percentiles
    truncated: list[Count] = []  # per listing, rows left out to keep the report bounded
    reactions: ReactionRates = msgspec.field(default_factory=ReactionRates)


class Trend(msgspec.Struct, frozen=True, kw_only=True):
    group: str  # total | runtime | host | event_type | validation_reason
    key: str
    metric: str
    current: float | None
    previous: float | None
    change: float | None  # current - previous; rates in fractions (0.05 = 5 points)


class WeeklyReport(msgspec.Struct, frozen=True, kw_only=True):
    week: str  # ISO week, 2026-W47
    previous_week: str
    tenant: str | None
    since: float  # Monday 00:00 UTC
    until: float
    current: BaselineReport
    trends: list[Trend]
    new_validation_reasons: list[Count]  # reasons not seen the week before
    operator_sessions: list[Trend]  # sessions most often needing the operator
    daily_runs: list[int]  # Monday .. Sunday
    previous_daily_runs: list[int]


class BaselineRequest(Message, frozen=True, tag="report.baseline.request"):
    since: float | None = None
    until: float | None = None
    tenant: str | None = None


class BaselineReply(Message, frozen=True, tag="report.baseline.reply"):
    report: BaselineReport


class WeeklyRequest(Message, frozen=True, tag="report.weekly.request"):
    week: str | None = None  # None: the last complete ISO week
    tenant: str | None = None
    post: bool = True  # store the digest as a report.weekly event


class WeeklyReply(Message, frozen=True, tag="report.weekly.reply"):
    report: WeeklyReport
    event_key: str | None = None  # idempotency key of the report.weekly event, if posted
    inbox: str | None = None  # what became of the evidence-inbox comment; None: no inbox


class MetricsRequest(Message, frozen=True, tag="metrics.request"):
    pass


class MetricsReply(Message, frozen=True, tag="metrics.reply"):
    text: str  # Prometheus text exposition format 0.0.4
    snapshot: dict[str, Any] = {}
