"""The controller's event store: an SQLite (WAL) index of every event, with FTS5 and links.

The JetStream stream is the log; this file is an index that ``rebuild`` can recreate from
it. That is why it runs with ``synchronous=NORMAL``: a power loss may drop the last
committed transactions, but the consumer acks JetStream only after the commit returns, and
whatever was lost is re-delivered or replayed, and inserts are idempotent.

Threads: one writer connection and one reader connection, each behind its own lock and
opened with ``check_same_thread=False``, so calls may come from any worker thread. WAL lets
the reader run while the writer holds its transaction; readers see only committed batches.
"""

# Long on purpose: one class owns both connections and their locks; SQL is elsewhere.
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from controller.events.store.insert import (
    add_link,
    default_idempotency_key,
    insert_batch,
    insert_event,
)
from controller.events.store.query import (
    SeqGap,
    StoredEvent,
    StoredLink,
    StoreQueryError,
    event_from_row,
    fts_error,
    gap_from_row,
    link_from_row,
    search_sql,
)
from controller.events.store.schema import (
    EVENT_COLUMNS,
    LINK_COLUMNS,
    SchemaVersionError,
    StoreError,
    migrate,
)
from protocol.events import Event, LinkType

__all__ = [
    "EventStore",
    "SchemaVersionError",
    "SeqGap",
    "StoreError",
    "StoreQueryError",
    "StoredEvent",
    "StoredLink",
    "default_idempotency_key",
]

_BUSY_TIMEOUT_S: Final = 10.0


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    # -- life -------------------------------------------------------------------------------

    def open(self) -> None:
        if self._writer is not None:
            raise StoreError(f"event store {self.path} is already open")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        try:
            # journal_mode is stored in the file; it must be set outside a transaction.
            mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                # Without WAL a reader would block the writer; refuse rather than crawl.
                raise StoreError(f"event store {self.path} cannot use WAL (journal_mode={mode})")
            migrate(writer)
            reader = self._connect()
        except BaseException:
            writer.close()
            raise
        try:
            # query_only: a bug in a read path can never write through the reader connection.
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            reader.close()
            writer.close()
            raise
        self._writer, self._reader = writer, reader

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is one
        # transaction no matter what the sqlite3 module's implicit-transaction rules are.
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            if self._writer is None:
                raise StoreError(f"event store {self.path} is not open")
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # in_transaction: a failed COMMIT (disk full) may or may not have ended it.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            if self._reader is None:
                raise StoreError(f"event store {self.path} is not open")
            yield self._reader

    # -- writes ------------------------------------------------------------------------------

    def insert_many(
        self, events: Sequence[Event], received_at: float | Sequence[float]
    ) -> list[int | None]:
        """Store a batch in one transaction; per event, its new row id or None if a duplicate.

        A duplicate is an event whose (tenant, host, boot_id, seq) or (tenant, host,
        session, idempotency_key) is already stored, including earlier in the same batch. A
        duplicate's links are dropped with it: the first copy's links stand.
        """
        if isinstance(received_at, float | int):
            stamps: Sequence[float] = [float(received_at)] * len(events)
        else:
            stamps = received_at
        with self._write() as conn:
            return insert_batch(conn, events, stamps)

    def rebuild(
        self, events: Iterable[Event], received_at: float | Callable[[Event], float]
    ) -> int:
        """Replace every row with ``events`` (e.g. replayed from JetStream); returns rows stored.

        Truncate and re-insert in one transaction through the live insert path: readers
        keep seeing the old rows until the commit, and the same events in the same order
        with the same ``received_at`` give identical rows, ids included. Pass a callable to
        give each event its own ``received_at`` (the JetStream message timestamp, say).
        """
        stamp = received_at if callable(received_at) else (lambda _event: received_at)
        stored = 0
        with self._write() as conn:
            for table in ("pending_links", "event_links", "boot_seqs"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("INSERT INTO events_fts (events_fts) VALUES ('delete-all')")
            conn.execute("DELETE FROM events")
            for event in events:
                if insert_event(conn, event, stamp(event)) is not None:
                    stored += 1
        return stored

    def link(
        self,
        from_id: int,
        to_id: int,
        type: LinkType,
        created_by: int | None = None,
        created_at: float | None = None,
    ) -> bool:
        """Add an edge between two stored events of one tenant; False if it already existed."""
        with self._write() as conn:
            tenants = dict(
                conn.execute(
                    "SELECT id, tenant FROM events WHERE id IN (?, ?, ?)",
                    (from_id, to_id, created_by),
                ).fetchall()
            )
            for event_id in (from_id, to_id, created_by):
                if event_id is not None and event_id not in tenants:
                    raise StoreQueryError(f"no stored event with id {event_id}")
            if len(set(tenants.values())) > 1:
                raise StoreQueryError("links cannot join events of different tenants")
            return add_link(
                conn,
                from_id,
                to_id,
                LinkType(type),
                created_by,
                time.time() if created_at is None else created_at,
            )

    # -- reads -------------------------------------------------------------------------------

    def search(
        self,
        query: str | None = None,
        *,
        tenant: str | None = None,
        host: str | None = None,
        session: str | None = None,
        event_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[StoredEvent]:
        """Events matching an FTS5 MATCH ``query`` (if given) and every filter given.

        ``since`` is inclusive and ``until`` exclusive, both on the event's own ``ts``.
        Results are ordered by id (arrival order), newest first unless ``order="asc"``.
        """
        filters = {"tenant": tenant, "host": host, "session": session, "event_type": event_type}
        sql, params = search_sql(query, filters, since, until, limit, order)
        with self._read() as conn:
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                error = fts_error(query, exc) if query is not None else None
                if error is None:
                    raise
                raise error from None
        return [event_from_row(row) for row in rows]

    def tail(
        self, after_id: int = 0, limit: int = 100, tenant: str | None = None
    ) -> list[StoredEvent]:
        """Events with id > ``after_id``, oldest first: page with the last id you got."""
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [event_from_row(row) for row in rows]

    def get(self, event_id: int) -> StoredEvent | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        return None if row is None else event_from_row(row)

    def find_by_key(
        self,
        idempotency_key: str,
        tenant: str | None = None,
        host: str | None = None,
        session: str | None = None,
    ) -> StoredEvent | None:
        """The event with this key; keys are unique per (tenant, host, session), so give
        those if known. Where several stored events match, the oldest wins."""
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key = ?"
        params: list[Any] = [idempotency_key]
        for column, value in (("tenant", tenant), ("host", host), ("session", session)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        with self._read() as conn:
            row = conn.execute(sql + " ORDER BY id LIMIT 1", params).fetchone()
        return None if row is None else event_from_row(row)

    def links(self, event_id: int) -> tuple[list[StoredLink], list[StoredLink]]:
        """(outgoing, incoming) edges of an event; outgoing includes still-pending ones."""
        with self._read() as conn:
            outgoing = conn.execute(
                f"SELECT {LINK_COLUMNS} FROM event_links WHERE from_event = ? "
                "ORDER BY to_event, type",
                (event_id,),
            ).fetchall()
            pending = conn.execute(
                "SELECT from_event, NULL, type, created_by_event, created_at, to_key "
                "FROM pending_links WHERE from_event = ? ORDER BY to_key, type",
                (event_id,),
            ).fetchall()
            incoming = conn.execute(
                f"SELECT {LINK_COLUMNS} FROM event_links WHERE to_event = ? "
                "ORDER BY from_event, type",
                (event_id,),
            ).fetchall()
        return [link_from_row(r) for r in outgoing + pending], [link_from_row(r) for r in incoming]

    def count(self, tenant: str | None = None) -> int:
        with self._read() as conn:
            if tenant is None:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM events WHERE tenant = ?", (tenant,)
                ).fetchone()
        total: int = row[0]
        return total

    def gaps(self) -> list[SeqGap]:
        """Host boots with missing sequence numbers.

        A host agent numbers its events 1, 2, 3, ... per boot, across all its sessions, so
        for each (tenant, host, boot_id) ``missing = max_seq - stored``, where ``stored``
        counts the distinct seqs >= 1 present. Seqs lost before the first one seen count as
        missing; seqs after the highest one seen cannot be known and do not.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT tenant, host, boot_id, min_seq, max_seq, stored, max_seq - stored "
                "FROM boot_seqs WHERE max_seq - stored > 0 ORDER BY tenant, host, boot_id"
            ).fetchall()
        return [gap_from_row(r) for r in rows]

    def total_gaps(self) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(max_seq - stored), 0) FROM boot_seqs WHERE max_seq > stored"
            ).fetchone()
        total: int = row[0]
        return total
