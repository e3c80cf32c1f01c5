"""The host agent's outbox: every event is on disk before it is sent, and leaves the disk
only when JetStream has acknowledged it.

One SQLite file per agent. It also holds the read offsets of the pane logs, written in the
same transaction as the events parsed from them, so an agent crash can neither lose nor
repeat output-derived events; and the takeover leases, written in the same transaction as
the lease event that announces the change, so a restarted agent holds what it granted and
reports each expiry exactly once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from protocol import decode, encode, subjects
from protocol.commands import CommandResult
from protocol.events import MAX_EXCERPT_CHARS, Event, Severity, SourceKind
from protocol.limits import PAYLOAD_LIMITS
from protocol.subjects import Kind

DEFAULT_MAX_EVENTS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    data BLOB NOT NULL,
    session TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    session TEXT PRIMARY KEY,
    log TEXT NOT NULL,
    offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    result BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    session TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""

# A takeover lease as stored: holder, reason, since, expires_at (agent/control/leases.py).
LeaseRow = tuple[str, str, float, float]


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    msg_id: str
    subject: str
    data: bytes


def oversize_replacement(event: Event) -> Event:
    """An event too large for the stream becomes a validation_error that says so."""
    size = len(encode(event))
    return msgspec.structs.replace(
        event,
        event_type="validation_error",
        source_kind=SourceKind.SYSTEM,
        severity=Severity.WARNING,
        summary=f"{event.event_type} event of {size} bytes dropped: "
        f"over the {PAYLOAD_LIMITS[Kind.EVT]}-byte limit",
        payload={
            "reason": "oversize_event",
            "detail": f"{size} bytes",
            "excerpt": encode(event)[:MAX_EXCERPT_CHARS].decode(errors="replace"),
        },
        tags=["validation_error", "oversize"],
        links=[],
        artifact_refs=[],
        idempotency_key=None,
        provenance="host agent size limit",
    )


class OutboxFull(Exception):
    """The outbox holds ``max_events`` unsent events; the caller must hold back."""


class Outbox:
    def __init__(self, path: Path, boot_id: str, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.path = path
        self.boot_id = boot_id
        self.max_events = max_events
        self.seq = 0
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged append must survive a power cut; the agent's whole promise.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._pending = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def full(self) -> bool:
        return self._pending >= self.max_events

    def counter(self, name: str) -> int:
        row = self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=value+?",
                (name, n, n),
            )

    def append(
        self,
        drafts: Sequence[Event],
        offsets: Mapping[str, tuple[str, int]] | None = None,
        *,
        droppable: bool = False,
        leases: Mapping[str, LeaseRow | None] | None = None,
    ) -> list[Event]:
        """Number the drafts (this boot's next seqs) and store them with the log offsets and
        the lease changes (None: the session's lease is gone), all in one transaction.

        At the bound, ``droppable`` events (observations with no log behind them) are dropped
        and counted; output-derived ones raise OutboxFull so the reader stops advancing its
        offset and the output waits in the pane log instead.
        """
        if drafts and self._pending + len(drafts) > self.max_events:
            if droppable:
                self.bump("dropped_at_bound", len(drafts))
                return []
            raise OutboxFull(f"outbox holds {self._pending} events (max {self.max_events})")
        events, rows = self._number(drafts)
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO outbox (msg_id, subject, data, session, created_at)"
                    " VALUES (?,?,?,?,?)",
                    rows,
                )
                for session, (log, offset) in (offsets or {}).items():
                    db.execute(
                        "INSERT INTO offsets VALUES (?,?,?) ON CONFLICT(session) DO UPDATE"
                        " SET log=excluded.log, offset=excluded.offset",
                        (session, log, offset),
                    )
                for session, row in (leases or {}).items():
                    if row is None:
                        db.execute("DELETE FROM leases WHERE session=?", (session,))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?)", (session, *row)
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self.seq -= len(drafts)
                raise
            self._pending += len(rows)
        return events

    def _number(
        self, drafts: Sequence[Event]
    ) -> tuple[list[Event], list[tuple[str, str, bytes, str, float]]]:
        """The drafts with this boot's next seqs, and their outbox rows; `append` takes the
        seqs back if the rows are not stored."""
        events = []
        rows = []
        for draft in drafts:
            self.seq += 1
            event = msgspec.structs.replace(draft, boot_id=self.boot_id, seq=self.seq)
            if len(encode(event)) > PAYLOAD_LIMITS[Kind.EVT]:
                event = oversize_replacement(event)
            events.append(event)
            rows.append(
                (
                    subjects.msg_id(event.host, event.boot_id, event.seq),
                    subjects.event(event.tenant, event.host, event.session, event.event_type),
                    encode(event),
                    event.session,
                    event.ts,
                )
            )
        return events, rows

    def offset(self, session: str) -> tuple[str, int] | None:
        row = self.db.execute(
            "SELECT log, offset FROM offsets WHERE session=?", (session,)
        ).fetchone()
        return (row[0], int(row[1])) if row else None

    def forget_offset(self, session: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM offsets WHERE session=?", (session,))

    def leases(self) -> dict[str, LeaseRow]:
        """The takeover leases as last written, expired ones included (the caller reports
        those)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT session, holder, reason, since, expires_at FROM leases"
            ).fetchall()
        return {r[0]: (r[1], r[2], float(r[3]), float(r[4])) for r in rows}

    def remember(self, command_id: str, result: bytes, at: float, keep_s: float = 86400.0) -> None:
        """Keep a command's result, so a replay of its id after a restart is still a no-op."""
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO commands VALUES (?,?,?)", (command_id, result, at)
            )
            self.db.execute("DELETE FROM commands WHERE at < ?", (at - keep_s,))

    def recall(self, command_id: str) -> CommandResult | None:
        with self._lock:
            row = self.db.execute(
                "SELECT result FROM commands WHERE command_id=?", (command_id,)
            ).fetchone()
        return decode(row[0], CommandResult) if row else None

    def peek(self, limit: int = 256) -> list[Pending]:
        """The oldest unsent events, in the order they were appended."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, msg_id, subject, data FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [Pending(r[0], r[1], r[2], r[3]) for r in rows]

    def ack(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])
            db.execute("COMMIT")
            self._pending = max(0, self._pending - len(ids))
