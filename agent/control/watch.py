"""Read-only watch streams: while a watch lease lives, the pane's screen is published on
`fleet.<t>.out.<host>.<session>` — a snapshot first, then each change. It only ever reads
the pane (capture-pane): no keys, no resize."""

from __future__ import annotations

import time

import anyio

from agent.control.leases import WatchLeases
from agent.discovery.sessions import primary_panes
from agent.discovery.tmux import Tmux
from agent.events.emitter import Connection
from agent.events.origin import Origin
from protocol import encode, subjects
from protocol.commands import WatchFrame

FRAME_EVERY_S = 0.2
KEEPALIVE_S = 2.0


async def stream_watches(
    watches: WatchLeases, tmux: Tmux, connection: Connection, origin: Origin
) -> None:
    last: dict[str, tuple[str, float]] = {}
    seq = 0
    while True:
        now = time.time()
        active = watches.active(now)
        for gone in set(last) - set(active):
            del last[gone]
        nc = connection()
        # One list-panes per tick for every watched session, not one each.
        panes = primary_panes(await tmux.list_panes()) if active else {}
        for session in active:
            pane = panes.get(session)
            if pane is None or nc is None or not nc.is_connected:
                continue
            screen = await tmux.capture(pane.pane_id, escapes=True)
            snapshot = watches.take_snapshot(session)
            previous = last.get(session)
            if (
                not snapshot
                and previous
                and previous[0] == screen
                and now - previous[1] < KEEPALIVE_S
            ):
                continue
            seq += 1
            frame = WatchFrame(
                tenant=origin.tenant,
                host=origin.host,
                session=session,
                seq=seq,
                snapshot=snapshot or previous is None,
                screen=screen,
                width=pane.width,
                height=pane.height,
                at=now,
            )
            await nc.publish(subjects.output(origin.tenant, origin.host, session), encode(frame))
            last[session] = (screen, now)
        await anyio.sleep(FRAME_EVERY_S)
