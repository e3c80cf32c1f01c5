"""`fleet report baseline|weekly` and `fleet metrics`: evidence from the controller.

The controller computes; the CLI renders and writes files, so `-o` lands where the operator
runs the command, not on the controller's disk.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.client import ControllerClient
from controller.cli.common import NatsOpt, fail, run_client
from controller.cli.events import parse_time
from controller.reports.render import baseline_md, daily_svg, to_json, weekly_md
from protocol import api
from protocol.reports_api import (
    BaselineReply,
    BaselineRequest,
    MetricsReply,
    MetricsRequest,
    WeeklyReply,
    WeeklyRequest,
)

report_app = typer.Typer(no_args_is_help=True, help="evidence: baseline and weekly reports")

REPORT_DEADLINE_S = 120.0  # a report scans a week of events; far longer than a `ps`


class Format(str, Enum):
    MD = "md"
    JSON = "json"


def write(path: Path, content: str) -> None:
    try:
        path.write_text(content)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


@report_app.command("baseline")
def baseline(
    since: Annotated[str | None, typer.Option(help="unix s, ISO 8601, or age (7d)")] = None,
    until: Annotated[str | None, typer.Option(help="unix s, ISO 8601, or age")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="md or json")] = Format.MD,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="write to FILE")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="same as --format json")] = False,
    nats_url: NatsOpt = None,
) -> None:
    """Run rates, latencies, emission compliance, validation errors, gaps and host downtime,
    and reaction match/skip rates with the top skip reasons."""
    if json_out:
        fmt = Format.JSON
    request = BaselineRequest(since=parse_time(since), until=parse_time(until), tenant=tenant)

    async def call(client: ControllerClient) -> BaselineReply:
        client.timeout = REPORT_DEADLINE_S
        return await client.call(api.REPORT_BASELINE, request)

    reply: BaselineReply = run_client(call, nats_url, deadline=REPORT_DEADLINE_S)
    text = to_json(reply.report) if fmt is Format.JSON else baseline_md(reply.report)
    if out is None:
        sys.stdout.write(text)
    else:
        write(out, text)
        sys.stdout.write(f"{out}\n")


@report_app.command("weekly")
def weekly(
    week: Annotated[
        str | None, typer.Option(help="ISO week, e.g. 2026-W47 (default: last full week)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    out_dir: Annotated[Path, typer.Option("-o", "--output-dir", help="directory")] = Path("."),
    post: Annotated[
        bool, typer.Option("--post/--no-post", help="store the digest as a report.weekly event")
    ] = True,
    nats_url: NatsOpt = None,
) -> None:
    """The week beside the week before: writes fleet-weekly-YYYY-WW.md, .json and .svg."""
    if not out_dir.is_dir():  # before asking: a failed write must not follow a posted digest
        fail(f"{out_dir} is not a directory")
    request = WeeklyRequest(week=week, tenant=tenant, post=post)

    async def call(client: ControllerClient) -> WeeklyReply:
        client.timeout = REPORT_DEADLINE_S
        return await client.call(api.REPORT_WEEKLY, request)

    reply: WeeklyReply = run_client(call, nats_url, deadline=REPORT_DEADLINE_S)
    report = reply.report
    stem = "fleet-weekly-" + report.week.replace("-W", "-")
    chart = f"{stem}.svg"
    write(out_dir / chart, daily_svg(report))
    write(out_dir / f"{stem}.json", to_json(report))
    write(out_dir / f"{stem}.md", weekly_md(report, chart=chart))
    for suffix in ("md", "json", "svg"):
        sys.stdout.write(f"{out_dir / f'{stem}.{suffix}'}\n")
    if reply.event_key:
        sys.stdout.write(f"posted {reply.event_key}\n")
    if reply.inbox:
        sys.stdout.write(f"evidence inbox: {reply.inbox}\n")


def metrics(
    json_out: Annotated[
        bool, typer.Option("--json", help="counters and histograms as JSON")
    ] = False,
    nats_url: NatsOpt = None,
) -> None:
    """The controller's metrics, in the Prometheus text format (or JSON)."""

    async def call(client: ControllerClient) -> MetricsReply:
        return await client.call(api.METRICS, MetricsRequest())

    reply: MetricsReply = run_client(call, nats_url)
    if json_out:
        sys.stdout.write(json.dumps(reply.snapshot, sort_keys=True) + "\n")
    else:
        sys.stdout.write(reply.text)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
    app.command("metrics")(metrics)
