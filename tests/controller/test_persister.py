"""What reaches SQLite when: changed hosts at once, every other host on a rolling slice that
covers the fleet within SNAPSHOT_PERSIST_S, everything at shutdown (real StateDB files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgspec.structs import replace

from controller.fleet.persister import SNAPSHOT_PERSIST_S, Persister
from controller.fleet.state import FleetState
from controller.fleet.statedb import StateDB
from protocol.heartbeat import Heartbeat, SessionSnapshot
from tests.controller.test_state import hb, ka


def stored_seqs(db: StateDB) -> dict[str, int]:
    return {entry.host: entry.seq for entry in db.load_hosts()}


def test_changed_hosts_at_once_the_rest_on_a_rolling_slice(tmp_path: Path) -> None:
    state = FleetState(grace_s=15.0)
    db = StateDB(tmp_path / "fleet.db")
    db.open()
    interval = 10.0
    persister = Persister(db, interval)
    hosts = [f"h{i:02d}" for i in range(12)]
    for host in hosts:
        state.on_heartbeat(hb(host=host, seq=1))
    persister.persist(state)  # new hosts are news: all written now
    assert stored_seqs(db) == dict.fromkeys(hosts, 1)

    for host in hosts:
        state.on_heartbeat(hb(host=host, seq=2))  # routine beats: nothing changed
    assert not state.dirty
    calls = round(SNAPSHOT_PERSIST_S / interval)
    per_call = len(hosts) // calls
    for done in range(1, calls + 1):
        persister.persist(state)
        fresh = [h for h, seq in stored_seqs(db).items() if seq == 2]
        assert len(fresh) == min(len(hosts), done * per_call)
    assert stored_seqs(db) == dict.fromkeys(hosts, 2)  # the whole fleet within 60 s

    state.on_heartbeat(hb(host="h05", seq=1, boot="b2"))  # a restart: written on the next call
    state.on_heartbeat(hb(host="new", seq=7))
    persister.persist(state)
    assert stored_seqs(db)["new"] == 7
    assert [e.boot_id for e in db.load_hosts() if e.host == "h05"] == ["b2"]
    db.close()


def test_everything_at_shutdown(tmp_path: Path) -> None:
    state = FleetState(grace_s=15.0)
    db = StateDB(tmp_path / "fleet.db")
    db.open()
    persister = Persister(db, 1.0)  # a slice of one host per call
    for i in range(5):
        state.on_heartbeat(hb(host=f"h{i}", seq=1))
    persister.persist(state)
    for i in range(5):
        state.on_heartbeat(hb(host=f"h{i}", seq=9))
    persister.persist(state, everything=True)
    assert stored_seqs(db) == {f"h{i}": 9 for i in range(5)}
    db.close()


def count_saves(db: StateDB) -> list[tuple[int, int]]:
    """From now on, each save's (whole rows, liveness-only rows), in order."""
    calls: list[tuple[int, int]] = []
    save = db.save

    def spy(hosts: Any, transitions: Any, liveness_only: Any = ()) -> None:
        hosts, liveness_only = list(hosts), list(liveness_only)
        calls.append((len(hosts), len(liveness_only)))
        save(hosts, transitions, liveness_only)

    db.save = spy  # type: ignore[method-assign]
    return calls


def snap(name: str) -> SessionSnapshot:
    return SessionSnapshot(name=name, runtime_configured="stub", runtime_observed="stub")


def written_once(tmp_path: Path, first: Heartbeat) -> tuple[FleetState, StateDB, Persister]:
    """A fleet of one host, its first heartbeat written."""
    state = FleetState(grace_s=15.0)
    db = StateDB(tmp_path / "fleet.db")
    db.open()
    persister = Persister(db, 1.0)
    state.on_heartbeat(first)
    persister.persist(state, everything=True)
    return state, db, persister


def test_keepalive_hosts_get_their_liveness_written_and_keep_their_sessions(
    tmp_path: Path,
) -> None:
    one = [snap("s1")]
    state, db, persister = written_once(tmp_path, hb(host="h1", seq=1, sessions=one))
    calls = count_saves(db)
    state.on_keepalive(ka(seq=5))  # sessions as held: a liveness row
    persister.persist(state, everything=True)
    assert calls[-1] == (0, 1)
    [row] = db.load_hosts()
    assert (row.seq, [s.name for s in row.sessions]) == (5, ["s1"])
    two = [*one, snap("s2")]
    state.on_heartbeat(hb(host="h1", seq=6, sessions=two))  # new sessions: the whole row
    persister.persist(state, everything=True)
    assert calls[-1] == (1, 0)
    [row] = db.load_hosts()
    assert (row.seq, [s.name for s in row.sessions]) == (6, ["s1", "s2"])
    db.close()


def test_a_periodic_full_heartbeat_with_the_same_digest_is_a_liveness_row(
    tmp_path: Path,
) -> None:
    first = replace(hb(host="h1", seq=1, sessions=[snap("s1")]), digest="00000000000000aa")
    state, db, persister = written_once(tmp_path, first)
    calls = count_saves(db)
    # The agent's twelfth beat: the same sessions, decoded into a new list, the same digest.
    again = [snap("s1")]
    state.on_heartbeat(replace(hb(host="h1", seq=2, sessions=again), digest="00000000000000aa"))
    persister.persist(state, everything=True)
    assert calls[-1] == (0, 1)
    state.on_heartbeat(replace(hb(host="h1", seq=3, sessions=again), digest="00000000000000bb"))
    persister.persist(state, everything=True)
    assert calls[-1] == (1, 0)
    db.close()
