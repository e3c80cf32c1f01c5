"""Read-only watch streams: while a watch lease lives, the pane's screen is published on
`fleet.<t>.out.<host>.<session>` — a snapshot first, then each change. It only ever reads
the pane (capture-pane): no keys, no resize."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from agent.discovery.sessions import primary_panes
from protocol import encode, subjects
from protocol.commands import WatchFrame

if TYPE_CHECKING:
    from agent.daemon import HostAgent

FRAME_EVERY_S = 0.2
KEEPALIVE_S = 2.0


async def stream_watches(agent: HostAgent) -> None:
    last: dict[str, tuple[str, float]] = {}
    seq = 0
    while True:
        now = time.time()
        active = agent.watches.active(now)
        for gone in set(last) - set(active):
            del last[gone]
        nc = agent.nc
        # One list-panes per tick for every watched session, not one each.
        panes = primary_panes(await agent.tmux.list_panes()) if active else {}
        for session in active:
            pane = panes.get(session)
            if pane is None or nc is None or not nc.is_connected:
                continue
            screen = await agent.tmux.capture(pane.pane_id, escapes=True)
            snapshot = session in agent.want_snapshot
            previous = last.get(session)
            if (
                not snapshot
                and previous
                and previous[0] == screen
                and now - previous[1] < KEEPALIVE_S
            ):
                continue
            agent.want_snapshot.discard(session)
            seq += 1
            frame = WatchFrame(
                tenant=agent.config.tenant,
                host=agent.host,
                session=session,
                seq=seq,
                snapshot=snapshot or previous is None,
                screen=screen,
                width=pane.width,
                height=pane.height,
                at=now,
            )
            await nc.publish(
                subjects.output(agent.config.tenant, agent.host, session), encode(frame)
            )
            last[session] = (screen, now)
        await anyio.sleep(FRAME_EVERY_S)
