"""The controller's memory across restarts: last known hosts and their state transitions.

SQLite in WAL mode. Written in batches (the dirty hosts every few seconds) from a worker
thread, so heartbeat ingest never waits on the disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import msgspec

from controller.fleet.state import HostEntry, Transition
from protocol.api import HostState
from protocol.heartbeat import SessionSnapshot

_MIGRATIONS = [
    """
    CREATE TABLE hosts (
        tenant TEXT NOT NULL,
        host TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        interval_s REAL NOT NULL,
        agent_version TEXT NOT NULL,
        state TEXT NOT NULL,
        state_since REAL NOT NULL,
        last_seen REAL NOT NULL,
        sessions_json BLOB NOT NULL,
        PRIMARY KEY (tenant, host)
    );
    CREATE TABLE host_transitions (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        host TEXT NOT NULL,
        old_state TEXT,
        new_state TEXT NOT NULL,
        at REAL NOT NULL,
        reason TEXT NOT NULL,
        silent_s REAL
    );
    CREATE INDEX host_transitions_at ON host_transitions (at);
    """,
]

_sessions_decoder = msgspec.json.Decoder(list[SessionSnapshot])


class StateDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("StateDB is not open")
        return self._db

    def load_hosts(self) -> list[HostEntry]:
        rows = self.db.execute(
            "SELECT tenant, host, boot_id, seq, interval_s, agent_version, state, state_since,"
            " last_seen, sessions_json FROM hosts"
        ).fetchall()
        return [
            HostEntry(
                tenant=r[0],
                host=r[1],
                boot_id=r[2],
                seq=r[3],
                interval_s=r[4],
                agent_version=r[5],
                state=HostState(r[6]),
                state_since=r[7],
                last_seen=r[8],
                last_seen_mono=0.0,
                sessions=_sessions_decoder.decode(r[9]),
            )
            for r in rows
        ]

    def save(
        self,
        hosts: Iterable[HostEntry],
        transitions: Iterable[Transition],
        liveness_only: Iterable[HostEntry] = (),
    ) -> None:
        """Write ``hosts`` whole, the liveness columns of ``liveness_only`` (whose sessions
        are as last written), and append ``transitions``; one transaction."""
        encode = msgspec.json.encode
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "UPDATE hosts SET boot_id=?3, seq=?4, interval_s=?5, agent_version=?6, state=?7,"
                " state_since=?8, last_seen=?9 WHERE tenant=?1 AND host=?2",
                [_liveness(h) for h in liveness_only],
            )
            db.executemany(
                "INSERT OR REPLACE INTO hosts VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(*_liveness(h), encode(h.sessions)) for h in hosts],
            )
            db.executemany(
                "INSERT INTO host_transitions (tenant, host, old_state, new_state, at, reason,"
                " silent_s) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        t.tenant,
                        t.host,
                        t.old.value if t.old else None,
                        t.new.value,
                        t.at,
                        t.reason,
                        t.silent_s,
                    )
                    for t in transitions
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def transitions(self, since: float = 0.0) -> list[Transition]:
        rows = self.db.execute(
            "SELECT tenant, host, old_state, new_state, at, reason, silent_s"
            " FROM host_transitions WHERE at >= ? ORDER BY id",
            (since,),
        ).fetchall()
        return [
            Transition(
                r[0], r[1], HostState(r[2]) if r[2] else None, HostState(r[3]), r[4], r[5], r[6]
            )
            for r in rows
        ]


def _liveness(h: HostEntry) -> tuple[object, ...]:
    """A host row's columns but its sessions, in table order (the UPDATE numbers them)."""
    return (
        h.tenant,
        h.host,
        h.boot_id,
        h.seq,
        h.interval_s,
        h.agent_version,
        h.state.value,
        h.state_since,
        h.last_seen,
    )
