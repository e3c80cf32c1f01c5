"""`fleet top`: the fleet live, full screen, with the attention queue on top.

A first listing (`ps`, `attention.list`), then the controller pushes every change (session
states as they happen, host changes, events, attention items) to a subject in our own inbox
while we renew the feed every 2 s; one full listing every 15 s brings what only heartbeats
carry (flags, new sessions). No poll per row. Drawn with rich's ``Live`` (already a
dependency; docs/architecture.md says why not Textual). Not a TTY, or ``--once``: plain tables,
one frame (``--once``) or one every ``--interval`` seconds.
"""

from __future__ import annotations

import contextlib
import sys
import termios
import time
import tty
from collections.abc import Iterator
from functools import partial
from typing import Annotated

import anyio
import msgspec
import typer
from nats.aio.subscription import Subscription
from rich.console import Console
from rich.live import Live

from controller.cli.client import ControllerClient
from controller.cli.common import NatsOpt, run_client
from controller.cli.top_keys import KeyLoop
from controller.cli.top_view import Filters, TopModel, frame
from protocol import DecodeError, api, decode
from protocol.api import PsRequest, PsRow
from protocol.attention import AttentionItem, AttentionListRequest, FeedMessage, FeedRequest

RENEW_S = 2.0
FEED_TTL_S = 6.0
RESYNC_S = 15.0
MAX_ROWS = 20_000  # a live view of more rows than this is narrowed with the filters
REDRAW_S = 0.25  # at most 4 frames a second, however fast updates come


async def listing(
    client: ControllerClient, filters: Filters
) -> tuple[list[PsRow], list[AttentionItem]]:
    rows: list[PsRow] = []
    cursor: int | None = 0
    request = PsRequest(tenant=filters.tenant, host=filters.host)
    while cursor is not None and len(rows) < MAX_ROWS:
        reply = await client.call(api.PS, msgspec.structs.replace(request, cursor=cursor))
        rows.extend(reply.rows)
        cursor = reply.next_cursor
    att = await client.call(
        api.ATTENTION_LIST, AttentionListRequest(tenant=filters.tenant, host=filters.host)
    )
    return rows, att.items


@contextlib.contextmanager
def cbreak() -> Iterator[None]:
    """Keys one at a time without echo, restored however we leave."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _subscribe(
    client: ControllerClient, filters: Filters
) -> tuple[Subscription, FeedRequest]:
    """The live feed's inbox, subscribed and asked for, and the request that renews it."""
    deliver = client.nc.new_inbox()
    sub = await client.nc.subscribe(deliver)
    feed = FeedRequest(deliver=deliver, ttl_s=FEED_TTL_S, tenant=filters.tenant, host=filters.host)
    await client.call(api.FEED, feed)  # before the listing: nothing between the two is missed
    return sub, feed


async def _live(
    client: ControllerClient, filters: Filters, console: Console, env: dict[str, str]
) -> None:
    model = TopModel(filters=filters)
    sub, feed = await _subscribe(client, filters)
    model.load(*await listing(client, filters))
    quit_ = anyio.Event()
    dirty = anyio.Event()

    async def renew() -> None:
        last_sync = time.monotonic()
        while True:
            await anyio.sleep(RENEW_S)
            await client.call(api.FEED, feed)
            if time.monotonic() - last_sync >= RESYNC_S:
                model.load(*await listing(client, filters))
                last_sync = time.monotonic()
                dirty.set()

    async def follow() -> None:
        async for msg in sub.messages:
            try:
                message: FeedMessage = decode(msg.data, FeedMessage)
            except DecodeError:
                continue
            if model.apply(message):
                dirty.set()

    paused = False

    def moved(delta: int) -> None:
        model.move(delta)
        dirty.set()

    with cbreak(), Live(console=console, screen=True, auto_refresh=False) as live:

        def pause(on: bool) -> None:  # an action runs a command in the terminal meanwhile
            nonlocal paused
            paused = on
            live.stop() if on else live.start()
            dirty.set()

        keys = KeyLoop(model.target, moved, pause, quit_.set, env)
        async with anyio.create_task_group() as tg:
            tg.start_soon(renew)
            tg.start_soon(follow)
            tg.start_soon(partial(anyio.to_thread.run_sync, keys.run, abandon_on_cancel=True))
            try:
                while not quit_.is_set():
                    if not paused:
                        live.update(frame(model, time.time(), console.size.height), refresh=True)
                    with anyio.move_on_after(1.0):  # time in state moves on its own
                        await dirty.wait()
                    dirty = anyio.Event()
                    await anyio.sleep(REDRAW_S)
            finally:
                keys.stop.set()
                tg.cancel_scope.cancel()


def top(
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    host: Annotated[str | None, typer.Option(help="only this host")] = None,
    state: Annotated[
        str | None, typer.Option(help="only rows whose session or host is in this state")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    interval: Annotated[
        float, typer.Option(help="seconds between frames when not a terminal")
    ] = 5.0,
    nats_url: NatsOpt = None,
) -> None:
    """The fleet live: attention queue, sessions with state and time in state, events."""
    filters = Filters(tenant=tenant, host=host, state=state)
    console = Console(highlight=False)
    if not once and console.is_terminal and sys.stdin.isatty():
        env = {"FLEET_NATS_URL": nats_url} if nats_url else {}
        run_client(lambda c: _live(c, filters, console, env), nats_url, deadline=None)
        return

    async def frames(client: ControllerClient) -> None:
        model = TopModel(filters=filters)
        while True:
            model.load(*await listing(client, filters))
            console.print(frame(model, time.time(), height=MAX_ROWS, live=False))
            if once:
                return
            console.print()
            await anyio.sleep(interval)

    run_client(frames, nats_url, deadline=None)


def register(app: typer.Typer) -> None:
    app.command()(top)
