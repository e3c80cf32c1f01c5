"""Human output of the CLI (rich tables). JSON output never goes through here."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from protocol.api import HostState, PsRow

_HOST_STYLE = {
    HostState.OK: "green",
    HostState.SUSPECT: "yellow",
    HostState.DOWN: "bold red",
    HostState.STOPPED: "dim",
}


def age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def runtime_cell(row: PsRow) -> str:
    snap = row.session
    if snap is None:
        return "-"
    configured = snap.runtime_configured
    observed = snap.runtime_observed
    if configured is None:
        return observed or "?"
    if observed and observed != configured:
        return f"{configured} (saw {observed})"
    return configured


def ps_table(rows: Iterable[PsRow]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TENANT", "HOST", "SESSION", "RUNTIME", "HOST-STATE", "STATE", "HB-AGE", "FLAGS"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        snap = row.session
        flags = " ".join(f.value for f in row.flags)
        table.add_row(
            row.tenant,
            row.host,
            snap.name if snap else "-",
            runtime_cell(row),
            f"[{_HOST_STYLE[row.host_state]}]{row.host_state.value}[/]",
            snap.state.value if snap else "-",
            age(row.heartbeat_age_s),
            f"[red]{flags}[/]" if flags else "",
        )
    return table


def print_ps(console: Console, rows: list[PsRow], counts: dict[str, int]) -> None:
    if rows:
        console.print(ps_table(rows))
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    hosts = sum(counts.values())
    console.print(f"\n{len(rows)} rows, {hosts} hosts" + (f" ({summary})" if summary else ""))
