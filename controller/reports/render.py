"""Reports as Markdown, JSON and a small SVG chart. Deterministic: no clock, sorted keys,
fixed number formats, so the same report always renders to the same bytes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from xml.sax.saxutils import escape

import msgspec

from protocol.reports_api import BaselineReport, Count, RunRates, Trend, WeeklyReport

RATES: Final = frozenset({"completion_rate", "error_rate", "cancel_rate"})


def to_json(report: Any) -> str:
    return (
        msgspec.json.format(msgspec.json.encode(report, order="sorted"), indent=2).decode() + "\n"
    )


def when(ts: float | None) -> str:
    if ts is None:
        return "open"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "n/a"
    if metric in RATES or metric.endswith("_share"):
        return f"{value * 100:.1f}%"
    if float(value).is_integer() and not metric.endswith(("_ms", "_s")):
        return str(int(value))
    return f"{value:.1f}"


def fmt_change(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    if metric in RATES or metric.endswith("_share"):
        return f"{value * 100:+.1f} pp"
    return f"{value:+.0f}" if float(value).is_integer() else f"{value:+.1f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines if len(lines) > 2 else ["(none)"]


def rate_table(title: str, rows: list[RunRates]) -> list[str]:
    body = [
        (r.key, str(r.runs), fmt(r.completion_rate, "completion_rate"),
         fmt(r.error_rate, "error_rate"), fmt(r.cancel_rate, "cancel_rate"))
        for r in rows
    ]  # fmt: skip
    return [
        "",
        f"### {title}",
        "",
        *table((title, "runs", "completed", "errors", "cancelled"), body),
    ]


def count_table(title: str, rows: list[Count]) -> list[str]:
    return ["", f"### {title}", "", *table((title, "count"), ((c.key, str(c.count)) for c in rows))]


# Long on purpose: the report page top to bottom: one list of lines reads as the page.
def baseline_md(r: BaselineReport, heading: str = "Fleet baseline report") -> str:
    c = r.compliance
    lines = [
        f"# {heading}",
        "",
        f"- range: {when(r.since)} to {when(r.until)}; tenant: {r.tenant or 'all'}",
        f"- events: {r.events}; runs: {r.totals.runs}",
        f"- completed {fmt(r.totals.completion_rate, 'completion_rate')}, errors "
        f"{fmt(r.totals.error_rate, 'error_rate')}, cancelled "
        f"{fmt(r.totals.cancel_rate, 'cancel_rate')}",
        f"- cancel latency p50/p95: {fmt(r.cancel_latency_ms.p50, '_ms')} / "
        f"{fmt(r.cancel_latency_ms.p95, '_ms')} ms ({r.cancel_latency_ms.count} cancels)",
        f"- command round trip p50/p95: {fmt(r.command_round_trip_ms.p50, '_ms')} / "
        f"{fmt(r.command_round_trip_ms.p95, '_ms')} ms ({r.command_round_trip_ms.count} commands)",
        f"- emission compliance: run completions {fmt(c.run_completions_emitted_share, '_share')}"
        f" emitted ({c.run_completions_emitted} emitted, {c.run_completions_synthesized} "
        f"synthesized); tool results {fmt(c.tool_results_emitted_share, '_share')} emitted "
        f"({c.tool_results_emitted} emitted, {c.tool_results_synthesized} synthesized)",
        f"- sequence gaps: {r.sequence_gaps}" + ("" if r.sequence_gaps == 0 else " (must be 0)"),
        f"- host down periods: {len(r.host_down)}; detection p50/p95: "
        f"{fmt(r.detection_s.p50, '_s')} / {fmt(r.detection_s.p95, '_s')} s",
        f"- reactions: {r.reactions.decisions} decisions, matched "
        f"{fmt(r.reactions.match_rate, '_share')}, skipped {fmt(r.reactions.skip_rate, '_share')};"
        f" {r.reactions.delivered} delivered, {r.reactions.failed} failed",
    ]
    lines += ["", "## Runs"]
    for title, rows in (
        ("tenant", r.by_tenant),
        ("runtime", r.by_runtime),
        ("host", r.by_host),
        ("session", r.by_session),
    ):
        lines += rate_table(title, rows)
    lines += ["", "## Events"]
    lines += count_table("validation error reason", r.validation_errors)
    lines += count_table("event type", r.events_by_type)
    lines += count_table("source kind", r.events_by_source)
    lines += count_table("synthesis rule", r.synthesized_by_rule)
    lines += count_table("command verb:outcome", r.commands)
    lines += count_table("session needing the operator", r.operator_action_sessions)
    lines += count_table("reaction skip reason", r.reactions.skip_reasons)
    lines += ["", "## Hosts", "", "### down periods", ""]
    lines += table(
        ("host", "down at", "up at", "duration s", "detection s"),
        (
            (f"{d.tenant}/{d.host}", when(d.down_at), when(d.up_at) if d.up_at else "still down",
             fmt(d.duration_s, "_s"), fmt(d.detection_s, "_s"))
            for d in r.host_down
        ),
    )  # fmt: skip
    lines += ["", "### sequence gaps", ""]
    lines += table(
        ("boot", "seqs", "stored", "missing"),
        (
            (f"{g.tenant}/{g.host}/{g.boot_id}", f"{g.min_seq}-{g.max_seq}", str(g.stored),
             str(g.missing))
            for g in r.gap_boots
        ),
    )  # fmt: skip
    if r.truncated:
        lines += ["", "Rows left out: " + ", ".join(f"{c.key} {c.count}" for c in r.truncated)]
    return "\n".join(lines) + "\n"


def trend_rows(trends: list[Trend], group: str) -> list[tuple[str, ...]]:
    return [
        (t.key, t.metric, fmt(t.current, t.metric), fmt(t.previous, t.metric),
         fmt_change(t.change, t.metric))
        for t in trends
        if t.group == group
    ]  # fmt: skip


def weekly_md(w: WeeklyReport, chart: str | None = None, chart_text: str | None = None) -> str:
    """``chart``: the SVG's address, as an image; ``chart_text``: the chart drawn in text, for
    where no file can go along (an issue comment: forges strip ``data:`` images)."""
    header = ("key", "metric", w.week, w.previous_week, "change")
    lines = [
        f"# Fleet weekly report {w.week}",
        "",
        f"{when(w.since)} to {when(w.until)}, tenant {w.tenant or 'all'}, "
        f"compared with {w.previous_week}.",
    ]
    if chart:
        lines += ["", f"![runs per day, {w.week} vs {w.previous_week}]({chart})"]
    if chart_text:
        lines += ["", f"Runs per day, {w.week} (█) vs {w.previous_week} (░):", "", chart_text]
    for group, title in (
        ("total", "Totals"),
        ("runtime", "By runtime"),
        ("host", "By host"),
        ("event_type", "By event type"),
        ("validation_reason", "Validation errors by reason"),
    ):
        lines += ["", f"## {title}", "", *table(header, trend_rows(w.trends, group))]
    lines += ["", "## New validation-error reasons", ""]
    lines += table(("reason", "count"), ((c.key, str(c.count)) for c in w.new_validation_reasons))
    lines += ["", "## Sessions most often needing the operator", ""]
    lines += table(
        header[:1] + header[2:], [r[:1] + r[2:] for r in trend_rows(w.operator_sessions, "session")]
    )
    lines += ["", "## Baseline for the week", ""]
    lines += baseline_md(w.current, f"Baseline {w.week}").splitlines()[2:]
    return "\n".join(lines) + "\n"


DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def daily_text(w: WeeklyReport, width: int = 40) -> str:
    """The daily chart of ``daily_svg`` as a fenced block of bars: Markdown anywhere."""
    peak = max([1, *w.daily_runs, *w.previous_daily_runs])
    rows = []
    for day, now, before in zip(DAYS, w.daily_runs, w.previous_daily_runs, strict=True):
        rows.append(f"{day} █ {'█' * round(width * now / peak):<{width}} {now}")
        rows.append(f"    ░ {'░' * round(width * before / peak):<{width}} {before}")
    return "```\n" + "\n".join(rows) + "\n```"


def daily_svg(w: WeeklyReport) -> str:
    """Grouped bars: runs per day, this week beside last week."""
    width, height, left, top, bottom = 420, 200, 40, 30, 30
    plot_h = height - top - bottom
    peak = max([1, *w.daily_runs, *w.previous_daily_runs])
    slot = (width - left - 10) / 7
    bar = slot / 3
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f"<title>runs per day, {escape(w.week)} vs {escape(w.previous_week)}</title>",
        f'<text x="{left}" y="14">runs per day: {escape(w.week)} (dark) vs '
        f"{escape(w.previous_week)} (light)</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
        'stroke="#444"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for day in range(7):
        x0 = left + day * slot + bar / 2
        for offset, runs, colour in (
            (0.0, w.previous_daily_runs[day], "#9ecae1"),
            (bar, w.daily_runs[day], "#08519c"),
        ):
            h = round(plot_h * runs / peak, 1)
            parts.append(
                f'<rect x="{x0 + offset:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{runs}</title></rect>'
            )
        parts.append(
            f'<text x="{x0 + bar:.1f}" y="{height - 12}" text-anchor="middle">{DAYS[day]}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
