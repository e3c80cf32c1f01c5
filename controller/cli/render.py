"""Human output of the CLI (rich tables). JSON output never goes through here."""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from protocol.api import HostState, PsRow

_HOST_STYLE = {
    HostState.OK: "green",
    HostState.SUSPECT: "yellow",
    HostState.DOWN: "bold red",
    HostState.STOPPED: "dim",
}


# C0 and C1 controls and DEL, plus the bidi overrides and isolates that reorder what a
# terminal shows: a summary or a runtime name holding ESC could recolour, move the cursor or
# retitle the operator's terminal (issue 15). Shown as visible escapes instead.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: str) -> str:
    """Untrusted text (from a host, a session, an operator) made safe to print on a terminal:
    one line, no control characters; each shown as its escape (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def cell(text: str | None, style: str = "") -> Text:
    """A table cell that is printed as is: no rich markup, no control characters."""
    return Text(safe(text or ""), style=style)


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
            cell(row.tenant),
            cell(row.host),
            cell(snap.name if snap else "-"),
            cell(runtime_cell(row)),
            cell(row.host_state.value, _HOST_STYLE[row.host_state]),
            cell(snap.state.value if snap else "-"),
            age(row.heartbeat_age_s),
            cell(flags, "red"),
        )
    return table


def print_ps(console: Console, rows: list[PsRow], counts: dict[str, int]) -> None:
    if rows:
        console.print(ps_table(rows))
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    hosts = sum(counts.values())
    console.print(f"\n{len(rows)} rows, {hosts} hosts" + (f" ({summary})" if summary else ""))
