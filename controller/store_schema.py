"""The event store's layout: migrations (``PRAGMA user_version``) and how an Event becomes rows.

Each entry of ``MIGRATIONS`` moves the database from version ``i`` to ``i + 1`` and runs in
its own transaction together with the version bump, so a crash mid-migration leaves the
file at the old version, never half-migrated. Append new steps; never edit a shipped one.

The write path (``insert_event``, ``add_link``) lives here too, next to the tables it fills;
``controller.store`` owns the connections and transactions around it.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import msgspec

from protocol.events import Event, LinkType, Severity, SourceKind


class StoreError(Exception):
    """The event store cannot do what was asked (not open, unknown schema, bad argument)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer agentfleet than this one."""


_LINK_TYPES: Final = ", ".join(f"'{t.value}'" for t in LinkType)

_V1: Final = f"""
CREATE TABLE events (
    id INTEGER PRIMARY KEY,  -- no AUTOINCREMENT: rebuild must be able to restart ids at 1
    tenant TEXT NOT NULL,
    host TEXT NOT NULL,
    session TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    event_type TEXT NOT NULL,
    summary TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    payload_json TEXT NOT NULL DEFAULT '{{}}',
    severity TEXT NOT NULL,
    confidence REAL,
    provenance TEXT,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('agent', 'system', 'operator')),
    -- Never NULL: the store fills <host>:<boot_id>:<seq> (the Nats-Msg-Id) when the event
    -- has none. Scoped by tenant so one tenant's keys can never suppress another's events.
    idempotency_key TEXT NOT NULL,
    dedupe_key TEXT,
    attention_candidate INTEGER NOT NULL DEFAULT 0,
    operator_action_required INTEGER NOT NULL DEFAULT 0,
    risk_detected INTEGER NOT NULL DEFAULT 0,
    artifact_refs TEXT NOT NULL DEFAULT '[]',
    run_id TEXT,
    -- One FTS token per tenant (hex keeps '-' and '_' from splitting it), so a word query
    -- for a small tenant intersects two doclists instead of walking every match of the word
    -- across the fleet. VIRTUAL: computed on read, costs no space in the table.
    fts_scope TEXT GENERATED ALWAYS AS ('t' || hex(tenant)) VIRTUAL,
    UNIQUE (tenant, host, boot_id, seq),
    UNIQUE (tenant, idempotency_key)
);

-- Each index serves a listing that ends in ORDER BY id LIMIT n, so SQLite walks it in id
-- order and stops after n rows instead of sorting every match.
CREATE INDEX events_tenant_id ON events (tenant, id);
CREATE INDEX events_session_id ON events (tenant, host, session, id);
CREATE INDEX events_type_id ON events (event_type, id);
CREATE INDEX events_ts ON events (ts);

-- External content: the text lives once, in events; the index holds only tokens.
CREATE VIRTUAL TABLE events_fts USING fts5 (
    summary, tags, payload_json, fts_scope,
    content = 'events', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Events are append-only, so an insert trigger is all the syncing the index needs;
-- rebuild() clears it with the 'delete-all' command.
CREATE TRIGGER events_fts_insert AFTER INSERT ON events BEGIN
    INSERT INTO events_fts (rowid, summary, tags, payload_json, fts_scope)
    VALUES (new.id, new.summary, new.tags, new.payload_json, new.fts_scope);
END;

-- Resolved edges. No surrogate id, so a rebuild reproduces the table exactly.
CREATE TABLE event_links (
    from_event INTEGER NOT NULL REFERENCES events (id),
    to_event INTEGER NOT NULL REFERENCES events (id),
    type TEXT NOT NULL CHECK (type IN ({_LINK_TYPES})),
    created_by_event INTEGER REFERENCES events (id),  -- NULL: made by an operator
    created_at REAL NOT NULL,
    PRIMARY KEY (from_event, to_event, type)
) WITHOUT ROWID;
CREATE INDEX event_links_to ON event_links (to_event);

-- Edges whose target (named by idempotency key) has not arrived yet; moved into
-- event_links by the insert that stores the target.
CREATE TABLE pending_links (
    tenant TEXT NOT NULL,
    from_event INTEGER NOT NULL REFERENCES events (id),
    to_key TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ({_LINK_TYPES})),
    created_by_event INTEGER REFERENCES events (id),
    created_at REAL NOT NULL,
    PRIMARY KEY (from_event, to_key, type)
) WITHOUT ROWID;
CREATE INDEX pending_links_target ON pending_links (tenant, to_key);

-- One row per (tenant, host, boot_id), kept by the insert path, so gap reports cost
-- O(boots) instead of a scan of every event.
CREATE TABLE boot_seqs (
    tenant TEXT NOT NULL,
    host TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    min_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    stored INTEGER NOT NULL,  -- distinct seqs >= 1 stored for this boot
    PRIMARY KEY (tenant, host, boot_id)
) WITHOUT ROWID;
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1,)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to ``SCHEMA_VERSION``; returns how many steps ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each step is wrapped in
    BEGIN IMMEDIATE so two processes opening one file cannot both run the same step.
    """
    ran = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = user_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"event store schema version {version} is newer than this agentfleet "
                    f"understands ({SCHEMA_VERSION}); upgrade agentfleet or rebuild the store"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return ran
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
            ran += 1
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a script into statements; executescript() would COMMIT our transaction first."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()[:80]!r}")
    return statements


# -- the write path ----------------------------------------------------------------------

EVENT_COLUMNS: Final = (
    "id, tenant, host, session, boot_id, seq, ts, received_at, event_type, summary, tags, "
    "payload_json, severity, confidence, provenance, source_kind, idempotency_key, dedupe_key, "
    "attention_candidate, operator_action_required, risk_detected, artifact_refs, run_id"
)
LINK_COLUMNS: Final = "from_event, to_event, type, created_by_event, created_at"

_encode = msgspec.json.Encoder().encode

# ON CONFLICT DO NOTHING rather than INSERT OR IGNORE: OR IGNORE also swallows NOT NULL and
# CHECK violations, which would make a malformed row look like a harmless duplicate.
_INSERT_EVENT: Final = f"""
INSERT INTO events ({EVENT_COLUMNS.removeprefix("id, ")})
VALUES ({", ".join("?" * 22)})
ON CONFLICT DO NOTHING
"""

_BUMP_BOOT: Final = """
INSERT INTO boot_seqs (tenant, host, boot_id, min_seq, max_seq, stored)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, host, boot_id) DO UPDATE SET
    min_seq = min(min_seq, excluded.min_seq),
    max_seq = max(max_seq, excluded.max_seq),
    stored = stored + excluded.stored
"""


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
    for link in event.links:
        # LinkType(...): Structs built in-process (not decoded) are not validated by msgspec.
        link_type = LinkType(link.type)
        row = conn.execute(
            "SELECT id FROM events WHERE tenant = ? AND idempotency_key = ?",
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
