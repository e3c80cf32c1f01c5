"""The weekly evidence digest: one ISO week's baseline beside the previous week's, with the
change of every figure (week-over-week trends). Weeks are ISO weeks in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final

from controller.reports.evidence import Inputs, Tally, _baseline
from protocol.reports_api import BaselineReport, Trend, WeeklyReport


def week_range(week: str | None, now: float) -> tuple[str, float, float]:
    """(``2026-W47``, Monday 00:00 UTC, next Monday 00:00 UTC); None: the last full week."""
    if week is None:
        today = datetime.fromtimestamp(now, UTC).date()
        monday = today - timedelta(days=today.weekday() + 7)
    else:
        try:
            year, _, number_ = week.upper().partition("-W")
            monday = date.fromisocalendar(int(year), int(number_), 1)
        except ValueError:
            raise ValueError(f"week must look like 2026-W47, not {week!r}") from None
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC).timestamp()
    iso = monday.isocalendar()
    return f"{iso.year}-W{iso.week:02d}", start, start + 7 * 86400


def iso_week(monday_ts: float) -> str:
    iso = datetime.fromtimestamp(monday_ts, UTC).date().isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


RATE_METRICS: Final = ("runs", "completion_rate", "error_rate", "cancel_rate")


def _trend(group: str, key: str, metric: str, cur: float | None, prev: float | None) -> Trend:
    change = None if cur is None or prev is None else round(cur - prev, 4)
    return Trend(group=group, key=key, metric=metric, current=cur, previous=prev, change=change)


def _totals(r: BaselineReport) -> dict[str, float | None]:
    return {
        "runs": r.totals.runs,
        "completion_rate": r.totals.completion_rate,
        "error_rate": r.totals.error_rate,
        "cancel_rate": r.totals.cancel_rate,
        "events": r.events,
        "cancel_latency_p50_ms": r.cancel_latency_ms.p50,
        "cancel_latency_p95_ms": r.cancel_latency_ms.p95,
        "command_round_trip_p50_ms": r.command_round_trip_ms.p50,
        "command_round_trip_p95_ms": r.command_round_trip_ms.p95,
        "run_completions_emitted_share": r.compliance.run_completions_emitted_share,
        "tool_results_emitted_share": r.compliance.tool_results_emitted_share,
        "validation_errors": sum(c.count for c in r.validation_errors),
        "synthesized_events": sum(c.count for c in r.synthesized_by_rule),
        "host_down_periods": len(r.host_down),
        "dead_host_detection_p50_s": r.detection_s.p50,
        "sequence_gaps": r.sequence_gaps,
    }


def trends(cur: BaselineReport, prev: BaselineReport) -> list[Trend]:
    out = [_trend("total", "all", m, v, _totals(prev)[m]) for m, v in _totals(cur).items()]
    for group, now, before in (
        ("runtime", cur.by_runtime, prev.by_runtime),
        ("host", cur.by_host, prev.by_host),
    ):
        rows_now, rows_before = {r.key: r for r in now}, {r.key: r for r in before}
        for key in sorted(rows_now.keys() | rows_before.keys()):
            a, b = rows_now.get(key), rows_before.get(key)
            for m in RATE_METRICS:
                # A group absent in one week had no runs: 0 runs, but no rate at all.
                zero = 0 if m == "runs" else None
                va, vb = getattr(a, m) if a else zero, getattr(b, m) if b else zero
                out.append(_trend(group, key, m, va, vb))
    for group, now_c, before_c in (
        ("event_type", cur.events_by_type, prev.events_by_type),
        ("validation_reason", cur.validation_errors, prev.validation_errors),
    ):
        a_map, b_map = {c.key: c.count for c in now_c}, {c.key: c.count for c in before_c}
        for key in sorted(a_map.keys() | b_map.keys()):
            out.append(_trend(group, key, "count", a_map.get(key, 0), b_map.get(key, 0)))
    return out


def _daily(tally: Tally, since: float) -> list[int]:
    days = [0] * 7
    for end in tally.run_ends.values():
        day = int((end[5] - since) // 86400)
        if 0 <= day < 7:
            days[day] += 1
    return days


TOP: Final = 10


def weekly(inputs: Inputs, week: str | None, now: float, tenant: str | None) -> WeeklyReport:
    name, since, until = week_range(week, now)
    cur, cur_tally = _baseline(inputs, since, until, tenant)
    prev, prev_tally = _baseline(inputs, since - 7 * 86400, since, tenant)
    reasons_before = {c.key for c in prev.validation_errors}
    fresh = [c for c in cur.validation_errors if c.key not in reasons_before][:TOP]
    needing = [
        _trend("session", key, "operator_action_required", n, prev_tally.operator[key])
        for key, n in sorted(cur_tally.operator.items(), key=lambda i: (-i[1], i[0]))[:TOP]
    ]
    return WeeklyReport(
        week=name,
        previous_week=iso_week(since - 7 * 86400),
        tenant=tenant,
        since=since,
        until=until,
        current=cur,
        trends=trends(cur, prev),
        new_validation_reasons=fresh,
        operator_sessions=needing,
        daily_runs=_daily(cur_tally, since),
        previous_daily_runs=_daily(prev_tally, since - 7 * 86400),
    )
