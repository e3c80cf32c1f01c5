"""The narrow ports the host agent's parts share: one roster, one origin for its events."""

from __future__ import annotations

from typing import cast

import anyio

from agent.config import SessionSpec
from agent.control.leases import Lease, WatchLeases, lease_event
from agent.discovery.roster import Roster
from agent.discovery.runtimes import load_runtimes
from agent.discovery.sessions import SessionTable
from agent.discovery.supervisor import Supervisor
from agent.discovery.tmux import Tmux
from agent.events.origin import Origin
from protocol.events import SourceKind
from protocol.heartbeat import SessionKind


def test_roster_iteration_survives_removal_while_walking() -> None:
    roster = Roster([SessionSpec(name="a"), SessionSpec(name="b")])
    roster.add(SessionSpec(name="w", kind=SessionKind.EPHEMERAL))
    seen = []
    for spec in roster:
        seen.append(spec.name)
        roster.remove(spec.name)
    assert seen == ["a", "b", "w"]
    assert len(roster) == 0 and roster.get("a") is None


def test_the_supervisor_forgets_an_ended_worker_in_the_table_too() -> None:
    # One roster: what the supervisor cleans up is gone from the session table's view.
    roster = Roster([SessionSpec(name="core")])
    roster.add(SessionSpec(name="w", kind=SessionKind.EPHEMERAL))
    table = SessionTable(roster, load_runtimes())
    launched: list[str] = []

    async def launch(spec: SessionSpec) -> None:
        launched.append(spec.name)

    # No panes at all: `w` is gone (cleaned up without touching tmux), `core` is only
    # reported dead for one backoff before a restart.
    supervisor = Supervisor(cast(Tmux, None), roster, launch, table.note_restart)
    anyio.run(supervisor.reconcile, [], 100.0)
    assert roster.names() == {"core"} and table.spec("w") is None and launched == []


def test_origin_fills_in_who_and_leaves_seq_to_the_outbox() -> None:
    origin = Origin("t1", "h1", "b" * 16)
    event = origin.event("s", "session.state", "s: idle", SourceKind.SYSTEM, ts=5.0)
    assert (event.tenant, event.host, event.boot_id, event.seq, event.ts) == (
        "t1",
        "h1",
        "b" * 16,
        0,
        5.0,
    )
    lease = lease_event(origin, "s", "lease.expired", Lease("ana", "fix", 1.0, 2.0), "ana")
    assert lease.summary == "s: expired by ana (fix)" and lease.payload["holder"] == "ana"


def test_a_resync_asks_for_exactly_one_snapshot() -> None:
    watches = WatchLeases()
    watches.want_snapshot("s")
    assert watches.take_snapshot("s") is True
    assert watches.take_snapshot("s") is False
