"""How events become rows: one at a time (``insert_event``), or a batch at once
(``insert_batch``) when none of it is already stored, giving the same rows and ids.

Why batches: ingest stores from a worker thread, and every statement hands the GIL back to
the event loop, which is busy with the next batch. Three or more statements per event meant
thousands of hand-offs per batch; a batch of new events takes a handful. Ingest end to end
went from 4,200 to 7,700-8,600 events/s (docs/benchmarks.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from controller.events.store.schema import EVENT_COLUMNS, LINK_COLUMNS
from protocol.events import Event, LinkType, Severity, SourceKind

_encode = msgspec.json.Encoder().encode

# ON CONFLICT DO NOTHING rather than INSERT OR IGNORE: OR IGNORE also swallows NOT NULL and
# CHECK violations, which would make a malformed row look like a harmless duplicate.
_ROW: Final = f"({', '.join('?' * 22)})"
_INSERT_INTO: Final = f"INSERT INTO events ({EVENT_COLUMNS.removeprefix('id, ')}) VALUES "
_INSERT_EVENT: Final = _INSERT_INTO + _ROW + " ON CONFLICT DO NOTHING"

_BUMP_BOOTS: Final = """
INSERT INTO boot_seqs (tenant, host, boot_id, min_seq, max_seq, stored)
VALUES {values}
ON CONFLICT (tenant, host, boot_id) DO UPDATE SET
    min_seq = min(min_seq, excluded.min_seq),
    max_seq = max(max_seq, excluded.max_seq),
    stored = stored + excluded.stored
"""
_BUMP_BOOT: Final = _BUMP_BOOTS.format(values="(?, ?, ?, ?, ?, ?)")


def default_idempotency_key(event: Event) -> str:
    """The key of an event that brings none: its Nats-Msg-Id, ``<host>:<boot_id>:<seq>``.

    Using the message id means anything that knows where an event was published can link
    to it. Ids cannot contain ':', so these keys cannot collide with one another.
    """
    return f"{event.host}:{event.boot_id}:{event.seq}"


def insert_event(conn: sqlite3.Connection, event: Event, received_at: float) -> int | None:
    """Insert one event inside the caller's transaction; its row id, or None if a duplicate."""
    key = event.idempotency_key or default_idempotency_key(event)
    cursor = conn.execute(_INSERT_EVENT, _event_params(event, key, received_at))
    if cursor.rowcount != 1:
        return None
    event_id = cursor.lastrowid
    assert event_id is not None  # a successful single-row INSERT always sets it
    # The unique (tenant, host, boot_id, seq) makes every row reaching here a distinct seq,
    # so a plain +1 keeps boot_seqs.stored a count of distinct seqs.
    counted = 1 if event.seq >= 1 else 0
    conn.execute(
        _BUMP_BOOT, (event.tenant, event.host, event.boot_id, event.seq, event.seq, counted)
    )
    _add_links(conn, event, event_id, received_at)
    # Links that named this event before it arrived (late arrival is normal). They keep
    # their original created_at, so the order of arrival does not change the row.
    waiting = conn.execute(
        "DELETE FROM pending_links WHERE tenant = ? AND to_key = ? "
        "RETURNING from_event, type, created_by_event, created_at",
        (event.tenant, key),
    ).fetchall()
    for from_event, link_type, created_by, created_at in waiting:
        add_link(conn, from_event, event_id, LinkType(link_type), created_by, created_at)
    return event_id


def _add_links(conn: sqlite3.Connection, event: Event, event_id: int, received_at: float) -> None:
    """The event's own links: resolved if the target is stored, else waiting for it."""
    for link in event.links:
        # LinkType(...): Structs built in-process (not decoded) are not validated by msgspec.
        link_type = LinkType(link.type)
        # Keys are unique per session, so several sessions may hold the target's key: the
        # first stored wins, as a pending link is resolved by the first to arrive.
        row = conn.execute(
            "SELECT id FROM events WHERE tenant = ? AND idempotency_key = ? ORDER BY id LIMIT 1",
            (event.tenant, link.target),
        ).fetchone()
        if row is not None:
            add_link(conn, event_id, row[0], link_type, event_id, received_at)
        else:
            conn.execute(
                "INSERT INTO pending_links (tenant, from_event, to_key, type, "
                "created_by_event, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (event.tenant, event_id, link.target, link_type.value, event_id, received_at),
            )


def add_link(
    conn: sqlite3.Connection,
    from_id: int,
    to_id: int,
    link_type: LinkType,
    created_by: int | None,
    created_at: float,
) -> bool:
    cursor = conn.execute(
        f"INSERT INTO event_links ({LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (from_id, to_id, link_type.value, created_by, created_at),
    )
    return cursor.rowcount == 1


def _event_params(event: Event, key: str, received_at: float) -> tuple[Any, ...]:
    return (
        event.tenant,
        event.host,
        event.session,
        event.boot_id,
        event.seq,
        event.ts,
        received_at,
        event.event_type,
        event.summary,
        _encode(event.tags).decode(),
        _encode(event.payload).decode(),
        Severity(event.severity).value,
        event.confidence,
        event.provenance,
        SourceKind(event.source_kind).value,
        key,
        event.dedupe_key,
        int(event.attention_candidate),
        int(event.operator_action_required),
        int(event.risk_detected),
        _encode(event.artifact_refs).decode(),
        event.run_id,
    )


# Rows per multi-row INSERT: 22 parameters each stays under SQLite's default limit of 32,766
# variables (3.32+); older builds allow 999, hence the getlimit below.
ROWS_PER_INSERT: Final = 500


def insert_batch(
    conn: sqlite3.Connection, events: Sequence[Event], stamps: Sequence[float]
) -> list[int | None]:
    """Insert a batch inside the caller's transaction; per event, its row id or None if a
    duplicate. The same rows, ids and links as ``insert_event`` one by one.

    The common batch holds only new events: they go in as multi-row INSERTs, boot counts as
    one upsert, links resolved after. If any row is a duplicate (a redelivery), the batch is
    rolled back to its savepoint and stored one by one, which knows which rows were dropped.
    """
    if not events:
        return []
    keys = [e.idempotency_key or default_idempotency_key(e) for e in events]
    params = [_event_params(e, k, float(s)) for e, k, s in zip(events, keys, stamps, strict=True)]
    conn.execute("SAVEPOINT batch")  # on an error the caller's ROLLBACK drops it with the rest
    ids = _insert_new(conn, params)
    if ids is None:
        conn.execute("ROLLBACK TO batch")
        conn.execute("RELEASE batch")
        return [insert_event(conn, e, float(s)) for e, s in zip(events, stamps, strict=True)]
    _bump_boots(conn, events)
    if conn.execute("SELECT 1 FROM pending_links LIMIT 1").fetchone() is not None:
        _resolve_waiting(conn, events, keys, ids)
    for event, event_id, stamp in zip(events, ids, stamps, strict=True):
        if event.links:
            _add_links(conn, event, event_id, float(stamp))
    conn.execute("RELEASE batch")
    return list(ids)


def _insert_new(conn: sqlite3.Connection, params: list[tuple[Any, ...]]) -> range | None:
    """Ids of the rows, if every one was new; None if any was dropped as a duplicate.

    Without AUTOINCREMENT each new row gets the largest id so far + 1, so n rows after
    ``last`` are last+1 .. last+n exactly when none was dropped.
    """
    last = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
    per = max(1, min(ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 22))
    for start in range(0, len(params), per):
        chunk = params[start : start + per]
        sql = _INSERT_INTO + ", ".join([_ROW] * len(chunk)) + " ON CONFLICT DO NOTHING"
        conn.execute(sql, [v for row in chunk for v in row])
    now = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
    return range(last + 1, now + 1) if now == last + len(params) else None


def _bump_boots(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    boots: dict[tuple[str, str, str], list[int]] = {}
    for e in events:
        counted = 1 if e.seq >= 1 else 0
        got = boots.get((e.tenant, e.host, e.boot_id))
        if got is None:
            boots[(e.tenant, e.host, e.boot_id)] = [e.seq, e.seq, counted]
        else:
            got[0], got[1], got[2] = min(got[0], e.seq), max(got[1], e.seq), got[2] + counted
    rows = [(*key, *figures) for key, figures in boots.items()]
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        conn.execute(_BUMP_BOOTS.format(values=values), [v for row in chunk for v in row])


def _resolve_waiting(
    conn: sqlite3.Connection, events: Sequence[Event], keys: list[str], ids: range
) -> None:
    by_tenant: dict[str, dict[str, int]] = {}
    for event, key, event_id in zip(events, keys, ids, strict=True):
        # setdefault: the first of the batch with a key takes its waiting links, as one by one.
        by_tenant.setdefault(event.tenant, {}).setdefault(key, event_id)
    for tenant, id_of in by_tenant.items():
        waiting = conn.execute(
            "DELETE FROM pending_links WHERE tenant = ? AND to_key IN "
            "(SELECT value FROM json_each(?)) "
            "RETURNING from_event, to_key, type, created_by_event, created_at",
            (tenant, _encode(list(id_of)).decode()),
        ).fetchall()
        for from_event, to_key, link_type, created_by, created_at in waiting:
            add_link(conn, from_event, id_of[to_key], LinkType(link_type), created_by, created_at)
