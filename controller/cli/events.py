"""`fleet events …` and `fleet store …`: the event store, from the command line."""

from __future__ import annotations

import math
import re
import sys
from datetime import datetime
from typing import Annotated

import anyio
import msgspec
import typer
from rich.console import Console

from controller.cli.client import ControllerClient
from controller.cli.common import JsonOpt, NatsOpt, fail, print_json, run_client
from controller.cli.render import safe
from protocol import api
from protocol.events import LinkType
from protocol.events_api import (
    EventLinkReply,
    EventLinkRequest,
    EventShowReply,
    EventShowRequest,
    EventsReply,
    EventsSearchRequest,
    EventsTailRequest,
    RebuildReply,
    RebuildRequest,
    StoredEvent,
)

events_app = typer.Typer(no_args_is_help=True, help="the event store: tail, search, show, link")
store_app = typer.Typer(no_args_is_help=True, help="the event store's maintenance")
console = Console(highlight=False)

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | None, now: float | None = None) -> float | None:
    """Unix seconds, ISO 8601, or an age such as 15m / 2h / 3d (before now); anything else
    is one line on stderr and exit 2 (a usage box would not be one line)."""
    if value is None:
        return None
    now = datetime.now().timestamp() if now is None else now
    bad = f"{value!r} is not a time: use unix seconds, ISO 8601 or an age like 15m, 2h, 3d"
    if m := _RELATIVE.match(value.strip()):
        ts = now - float(m.group(1)) * _UNITS[m.group(2)]
    else:
        try:
            ts = float(value)
        except ValueError:
            try:
                ts = datetime.fromisoformat(value).timestamp()
            except (ValueError, OverflowError):
                fail(bad)
    # 1e400 is inf, which JSON sends as null: the bound would silently vanish.
    if not math.isfinite(ts) or abs(ts) > 1e12:
        fail(bad)
    return ts


def when(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a host's clock (or a hostile ts) says 1e300
        return f"ts={ts!r}"


def event_line(e: StoredEvent) -> str:
    source = "" if e.source_kind.value == "agent" else f" [{e.source_kind.value}]"
    # What a host or an agent wrote is printed through safe(): no terminal escapes, one line.
    return safe(
        f"{e.id:>6}  {when(e.ts)}  {e.tenant}/{e.host}/{e.session}  {e.event_type}{source}"
        f"  {e.summary}"
    )


def print_events(events: list[StoredEvent], json_out: bool) -> None:
    for e in events:
        if json_out:
            print_json(e)
        else:
            console.print(event_line(e), markup=False)
    sys.stdout.flush()


@events_app.command("tail")
def tail(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events")
    ] = False,
    last: Annotated[int, typer.Option(help="start with the last N events")] = 20,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    nats_url: NatsOpt = None,
) -> None:
    """The newest events, oldest first; with -f, new ones as they are stored."""

    async def first(client: ControllerClient) -> int:
        reply = await client.call(api.EVENTS_TAIL, EventsTailRequest(last=last, tenant=tenant))
        print_events(reply.events, json_out)
        return reply.last_id

    after = run_client(first, nats_url)
    if not follow:
        return

    async def follow_forever(client: ControllerClient) -> None:
        cursor = after
        while True:
            reply = await client.call(
                api.EVENTS_TAIL, EventsTailRequest(after_id=cursor, tenant=tenant, limit=500)
            )
            print_events(reply.events, json_out)
            cursor = reply.last_id
            if not reply.events:
                await anyio.sleep(0.5)

    try:
        run_client(follow_forever, nats_url, deadline=None)
    except KeyboardInterrupt:
        pass


@events_app.command("search")
def search(
    query: Annotated[str | None, typer.Argument(help="FTS5 query, e.g. 'timeout OR oom'")] = None,
    tenant: Annotated[str | None, typer.Option()] = None,
    host: Annotated[str | None, typer.Option()] = None,
    session: Annotated[str | None, typer.Option()] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="exact event type")] = None,
    since: Annotated[str | None, typer.Option(help="unix s, ISO 8601, or age (15m, 2h)")] = None,
    until: Annotated[str | None, typer.Option(help="unix s, ISO 8601, or age")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (max 500)")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    nats_url: NatsOpt = None,
) -> None:
    """Full-text search over summaries, tags and payloads, newest first."""
    request = EventsSearchRequest(
        query=query,
        tenant=tenant,
        host=host,
        session=session,
        event_type=event_type,
        since=parse_time(since),
        until=parse_time(until),
        limit=limit,
    )

    async def call(client: ControllerClient) -> EventsReply:
        return await client.call(api.EVENTS_SEARCH, request)

    reply: EventsReply = run_client(call, nats_url)
    print_events(reply.events, json_out)
    if reply.truncated and not json_out:
        console.print(
            f"(more than {len(reply.events)} matched; narrow the search or raise --limit)",
            style="dim",
        )


@events_app.command("show")
def show(
    event_id: Annotated[int, typer.Argument(help="event id")],
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """One event with every field and its links, both ways."""

    async def call(client: ControllerClient) -> EventShowReply:
        return await client.call(api.EVENTS_SHOW, EventShowRequest(id=event_id))

    reply: EventShowReply = run_client(call, nats_url)
    if json_out:
        print_json(reply)
        return
    for name, value in msgspec.structs.asdict(reply.event).items():
        if isinstance(value, dict | list):
            value = msgspec.json.encode(value).decode()
        console.print(safe(f"{name:>25}: {value}"), markup=False)
    for label, links in (("links out", reply.outgoing), ("links in", reply.incoming)):
        for link in links:
            other = link.to_event if label == "links out" else link.from_event
            target = other if other is not None else f"(pending: {link.to_key})"
            console.print(safe(f"{label:>25}: {link.type.value} {target}"), markup=False)


@events_app.command("link")
def link(
    from_id: Annotated[int, typer.Argument(help="event the edge starts at")],
    to_id: Annotated[int, typer.Argument(help="event the edge points to")],
    link_type: Annotated[LinkType, typer.Option("--type", help="edge type")],
    nats_url: NatsOpt = None,
) -> None:
    """Add a typed edge between two stored events."""

    async def call(client: ControllerClient) -> EventLinkReply:
        request = EventLinkRequest(from_id=from_id, to_id=to_id, type=link_type)
        return await client.call(api.EVENTS_LINK, request)

    reply: EventLinkReply = run_client(call, nats_url)
    console.print(
        f"{from_id} {link_type.value} {to_id}: " + ("linked" if reply.created else "already linked")
    )


@store_app.command("rebuild")
def rebuild(
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Rebuild the event store from the JetStream streams (the log)."""

    async def call(client: ControllerClient) -> RebuildReply:
        client.timeout = 600.0
        return await client.call(api.STORE_REBUILD, RebuildRequest())

    reply: RebuildReply = run_client(call, nats_url, deadline=600.0)
    if json_out:
        print_json(reply)
        return
    console.print(
        f"rebuilt: {reply.events} events stored from {reply.stream_messages} stream "
        f"messages in {reply.took_s:.2f}s"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
    app.add_typer(store_app, name="store")
