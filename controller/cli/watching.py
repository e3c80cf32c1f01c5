"""`fleet watch`: a session's screen as the host agent sees it, relayed by the controller to
our own inbox, with the watch lease renewed while we look (and its events with --events)."""

from __future__ import annotations

import sys
import time
import uuid
from typing import TextIO

import anyio
import msgspec

from controller.cli.client import CommandRefused, ControllerClient
from protocol import api, decode
from protocol.commands import CommandRequest, CommandResult, Outcome, Watch, WatchFrame
from protocol.events_api import EventsSearchRequest

RENEW_S = 2.0
LEASE_S = 6.0


def _show(frame: WatchFrame, json_out: bool, out: TextIO) -> None:
    if json_out:
        out.write(msgspec.json.encode(frame).decode() + "\n")
    else:
        out.write("\x1b[H\x1b[2J" + frame.screen)
        out.write(
            f"\n\x1b[7m watching {frame.tenant}/{frame.host}/{frame.session} "
            f"(read-only, Ctrl-C to stop) \x1b[0m\n"
        )
    out.flush()


async def watch_session(
    client: ControllerClient, target: str, name: str, who: str, with_events: bool, json_out: bool
) -> None:
    """Print the frames of session ``name`` (``target``) until cancelled, as operator ``who``."""
    watcher = f"{who}:{uuid.uuid4().hex[:8]}"
    # Frames come to our own inbox: the controller relays them (we may not see tenant subjects).
    deliver = client.nc.new_inbox()
    frames = await client.nc.subscribe(deliver)

    async def renew(resync: bool) -> CommandResult:
        req = CommandRequest(
            target=target,
            body=Watch(session=name, watcher=watcher, ttl_s=LEASE_S, resync=resync),
            issued_by=who,
            timeout_s=5.0,
            deliver=deliver,
        )
        result = await client.call(api.CMD, req)
        if result.outcome is not Outcome.OK:
            raise CommandRefused(f"watch {target}: {result.outcome.value}: {result.message}")
        return result

    first = await renew(False)
    await renew(True)  # the relay is in place now: ask for the snapshot it could have missed
    out = sys.stdout
    since = None

    async def renew_forever() -> None:
        while True:
            await anyio.sleep(RENEW_S)
            await renew(False)

    async def follow_events() -> None:
        nonlocal since
        seen: set[int] = set()
        while True:
            req = EventsSearchRequest(
                tenant=first.tenant, host=first.host, session=first.session, since=since, limit=50
            )
            reply = await client.call(api.EVENTS_SEARCH, req)
            for e in sorted(reply.events, key=lambda e: e.id):
                if e.id in seen:
                    continue
                seen.add(e.id)
                line = (
                    msgspec.json.encode({"event": e}).decode()
                    if json_out
                    else f"[event {e.id}] {e.event_type}: {e.summary}"
                )
                out.write(line + "\n")
            out.flush()
            await anyio.sleep(1.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(renew_forever)
        if with_events:
            since = time.time() - 60
            tg.start_soon(follow_events)
        async for msg in frames.messages:
            _show(decode(msg.data, WatchFrame), json_out, out)
