"""What `fleet top` shows, kept from a first listing and the controller's pushed updates, and
drawn as one frame that fits the terminal (80x24 at least). Pure: no NATS, no terminal."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from controller.cli.attention import attention_table
from controller.cli.render import age
from controller.cli.top_keys import KEYS_HELP
from protocol.api import PsRow
from protocol.attention import (
    AttentionChanged,
    AttentionItem,
    FeedEvent,
    FeedMessage,
    HostDelta,
    ItemState,
    SessionDelta,
)

EVENT_ROWS = 5
ATTENTION_ROWS = 5
_STATE_STYLE = {"working": "cyan", "blocked": "bold yellow", "idle": "green", "exited": "red"}


@dataclass
class Row:
    tenant: str
    host: str
    session: str | None
    state: str
    since: float | None
    flags: list[str]


@dataclass
class Filters:
    tenant: str | None = None
    host: str | None = None
    state: str | None = None

    def keeps(self, tenant: str, host: str) -> bool:
        return (self.tenant is None or tenant == self.tenant) and (
            self.host is None or host == self.host
        )


@dataclass
class TopModel:
    filters: Filters = field(default_factory=Filters)
    rows: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    hosts: dict[tuple[str, str], str] = field(default_factory=dict)
    attention: dict[str, AttentionItem] = field(default_factory=dict)
    events: deque[FeedEvent] = field(default_factory=lambda: deque(maxlen=50))
    updates: int = 0  # pushed updates applied (shown, so a live view visibly moves)
    selected: int = 0  # index into visible(), the row the keys act on

    def visible(self) -> list[Row]:
        want = self.filters.state
        rows = sorted(self.rows.values(), key=lambda r: (r.tenant, r.host, r.session or ""))
        return [
            r for r in rows if want is None or want in (r.state, self.hosts.get((r.tenant, r.host)))
        ]

    def move(self, delta: int) -> None:
        self.selected = max(0, min(len(self.rows) - 1, self.selected + delta))

    def target(self) -> str | None:
        """TENANT/HOST/SESSION of the selected row, if it is a session."""
        rows = self.visible()
        if not rows:
            return None
        r = rows[min(self.selected, len(rows) - 1)]
        return f"{r.tenant}/{r.host}/{r.session}" if r.session else None

    def load(self, rows: list[PsRow], items: list[AttentionItem]) -> None:
        """A full listing: replaces what was known (pushed updates since then follow it)."""
        self.rows.clear()
        self.hosts.clear()
        for r in rows:
            self.hosts[(r.tenant, r.host)] = r.host_state.value
            snap = r.session
            name = snap.name if snap else ""
            self.rows[(r.tenant, r.host, name)] = Row(
                r.tenant,
                r.host,
                snap.name if snap else None,
                snap.state.value if snap else "-",
                snap.state_since if snap else None,
                [f.value for f in r.flags],
            )
        self.attention = {i.id: i for i in items if i.state is ItemState.OPEN}

    def apply(self, message: FeedMessage) -> bool:
        """One pushed update; whether it changed what is shown."""
        if isinstance(message, AttentionChanged):
            item = message.item
            if not self.filters.keeps(item.tenant, item.host):
                return False
            if item.state is ItemState.OPEN:
                self.attention[item.id] = item
            else:
                self.attention.pop(item.id, None)
        elif not self.filters.keeps(message.tenant, message.host):
            return False
        elif isinstance(message, SessionDelta):
            row = self.rows.get((message.tenant, message.host, message.session))
            if row is None:
                return False  # a session the next full listing brings
            row.state, row.since = message.state, message.since
        elif isinstance(message, HostDelta):
            self.hosts[(message.tenant, message.host)] = message.state
        elif isinstance(message, FeedEvent):
            self.events.append(message)
        self.updates += 1
        return True


def _sessions_table(model: TopModel, now: float, limit: int, live: bool) -> tuple[Table, int]:
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for col in ("HOST", "SESSION", "STATE", "IN-STATE", "HOST-ST", "FLAGS"):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=28)
    shown = 0
    kept = model.visible()
    selected = min(model.selected, len(kept) - 1) if live else -1
    first = max(0, selected - limit + 1)  # the selection stays on screen
    for i, r in enumerate(kept[first : first + limit], start=first):
        host_state = model.hosts.get((r.tenant, r.host), "?")
        style = _STATE_STYLE.get(r.state, "")
        table.add_row(
            f"{r.tenant}/{r.host}",
            r.session or "-",
            f"[{style}]{r.state}[/]" if style else r.state,
            age(max(0.0, now - r.since)) if r.since else "-",
            host_state if host_state == "ok" else f"[red]{host_state}[/]",
            f"[red]{' '.join(r.flags)}[/]" if r.flags else "",
            style="reverse" if i == selected else None,
        )
        shown += 1
    return table, len(kept) - shown


def _events_table(model: TopModel, rows: int) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("TYPE", "SOURCE", "SUMMARY", "FLAGS"):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=40)
    for e in list(model.events)[-rows:]:
        table.add_row(e.event_type, f"{e.host}/{e.session}", e.summary, " ".join(e.flags))
    return table


def frame(model: TopModel, now: float, height: int = 24, live: bool = True) -> RenderableType:
    """One screen: a status line, the attention queue, the sessions, the last events."""
    items = sorted(model.attention.values(), key=lambda i: -i.since)
    states: dict[str, int] = {}
    for r in model.rows.values():
        states[r.state] = states.get(r.state, 0) + 1
    counts = " ".join(f"{n} {s}" for s, n in sorted(states.items()))
    down = sum(1 for s in model.hosts.values() if s != "ok")
    head = Text.from_markup(
        f"[bold]fleet top[/]  {len(model.hosts)} hosts ({down} not ok)  "
        f"{len(model.rows)} rows: {counts}  [bold]{len(items)} need attention[/]"
    )
    parts: list[RenderableType] = [head]
    used = 2
    if items:
        shown = items[:ATTENTION_ROWS]
        parts.append(attention_table(shown, now, wide=False))
        used += len(shown) + 1
    event_rows = min(EVENT_ROWS, len(model.events)) if live else 0
    budget = max(3, height - used - (event_rows + 2 if event_rows else 0) - (3 if live else 2))
    table, more = _sessions_table(model, now, budget, live)
    parts.append(table)
    if more:
        parts.append(Text(f"… {more} more rows (--tenant/--host/--state to narrow)"))
    if event_rows:
        parts.append(Text.from_markup("[bold]events[/]"))
        parts.append(_events_table(model, event_rows))
    if live:
        parts.append(Text(KEYS_HELP, style="dim"))
    return Group(*parts)
