"""The event store's layout: migrations (``PRAGMA user_version``) and how an Event becomes rows.

Each entry of ``MIGRATIONS`` moves the database from version ``i`` to ``i + 1`` and runs in
its own transaction together with the version bump, so a crash mid-migration leaves the
file at the old version, never half-migrated. Append new steps; never edit a shipped one.

The write path that fills these tables is ``store.insert``; ``store.core``
owns the connections and transactions around it.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from protocol.events import LinkType


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

# v2 (issue 15): agent-supplied idempotency keys are unique per (tenant, host, session), not
# per tenant, so no session can pre-empt or suppress another's event by using its key. A
# table-level UNIQUE cannot be dropped, so the table is rebuilt (SQLite's documented
# procedure: new table, copy, drop, rename; `migrate` turns foreign keys off around it). Ids
# are copied, so the FTS index (content_rowid = id) and the link tables stay valid. The key
# leads the new index, so lookups by (tenant, key) still use it.
_V2: Final = """
CREATE TABLE events_v2 (
    id INTEGER PRIMARY KEY,
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
    payload_json TEXT NOT NULL DEFAULT '{}',
    severity TEXT NOT NULL,
    confidence REAL,
    provenance TEXT,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('agent', 'system', 'operator')),
    -- Never NULL: the store fills <host>:<boot_id>:<seq> when the event has none.
    idempotency_key TEXT NOT NULL,
    dedupe_key TEXT,
    attention_candidate INTEGER NOT NULL DEFAULT 0,
    operator_action_required INTEGER NOT NULL DEFAULT 0,
    risk_detected INTEGER NOT NULL DEFAULT 0,
    artifact_refs TEXT NOT NULL DEFAULT '[]',
    run_id TEXT,
    fts_scope TEXT GENERATED ALWAYS AS ('t' || hex(tenant)) VIRTUAL,
    UNIQUE (tenant, host, boot_id, seq),
    UNIQUE (tenant, idempotency_key, host, session)
);

INSERT INTO events_v2 (
    id, tenant, host, session, boot_id, seq, ts, received_at, event_type, summary, tags,
    payload_json, severity, confidence, provenance, source_kind, idempotency_key, dedupe_key,
    attention_candidate, operator_action_required, risk_detected, artifact_refs, run_id
)
SELECT
    id, tenant, host, session, boot_id, seq, ts, received_at, event_type, summary, tags,
    payload_json, severity, confidence, provenance, source_kind, idempotency_key, dedupe_key,
    attention_candidate, operator_action_required, risk_detected, artifact_refs, run_id
FROM events;

DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;

CREATE INDEX events_tenant_id ON events (tenant, id);
CREATE INDEX events_session_id ON events (tenant, host, session, id);
CREATE INDEX events_type_id ON events (event_type, id);
CREATE INDEX events_ts ON events (ts);

CREATE TRIGGER events_fts_insert AFTER INSERT ON events BEGIN
    INSERT INTO events_fts (rowid, summary, tags, payload_json, fts_scope)
    VALUES (new.id, new.summary, new.tags, new.payload_json, new.fts_scope);
END;
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to ``SCHEMA_VERSION``; returns how many steps ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each step is wrapped in
    BEGIN IMMEDIATE so two processes opening one file cannot both run the same step.
    """
    # Off while migrating: a step may rebuild a table others reference (it cannot be changed
    # inside a transaction); checked before each commit instead.
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        return _migrate(conn)
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _migrate(conn: sqlite3.Connection) -> int:
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
            broken = conn.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                raise StoreError(f"migration to version {version + 1} broke a reference: {broken}")
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


EVENT_COLUMNS: Final = (
    "id, tenant, host, session, boot_id, seq, ts, received_at, event_type, summary, tags, "
    "payload_json, severity, confidence, provenance, source_kind, idempotency_key, dedupe_key, "
    "attention_candidate, operator_action_required, risk_detected, artifact_refs, run_id"
)
LINK_COLUMNS: Final = "from_event, to_event, type, created_by_event, created_at"
