"""What the event store returns (frozen msgspec Structs) and the SQL of its read paths.

Kept apart from ``store.core`` so the connection handling there stays short; nothing
here touches a connection except through the cursor rows it is handed.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Final

import msgspec

from controller.events.store.schema import EVENT_COLUMNS, StoreError
from protocol.events import LinkType, Severity, SourceKind
from protocol.events_api import SeqGap, StoredEvent, StoredLink

__all__ = ["SeqGap", "StoreQueryError", "StoredEvent", "StoredLink"]

MAX_LIMIT: Final = 10_000


class StoreQueryError(StoreError, ValueError):
    """A read was asked for with arguments the store cannot run (bad FTS syntax, bad limit)."""


_E_COLUMNS: Final = ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))

_decode_list = msgspec.json.Decoder(list[str]).decode
_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode


def event_from_row(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(
        id=row[0],
        tenant=row[1],
        host=row[2],
        session=row[3],
        boot_id=row[4],
        seq=row[5],
        ts=row[6],
        received_at=row[7],
        event_type=row[8],
        summary=row[9],
        tags=_decode_list(row[10]),
        payload=_decode_dict(row[11]),
        severity=Severity(row[12]),
        confidence=row[13],
        provenance=row[14],
        source_kind=SourceKind(row[15]),
        idempotency_key=row[16],
        dedupe_key=row[17],
        attention_candidate=bool(row[18]),
        operator_action_required=bool(row[19]),
        risk_detected=bool(row[20]),
        artifact_refs=_decode_list(row[21]),
        run_id=row[22],
    )


def search_sql(
    query: str | None,
    filters: dict[str, Any],
    since: float | None,
    until: float | None,
    limit: int,
    order: str,
) -> tuple[str, list[Any]]:
    """Build the SELECT behind ``EventStore.search``.

    With a word query the FTS table drives the loop: fts5 yields rowids in ORDER BY rowid
    order natively, each is joined to events by primary key and the filters are checked
    on that row, so LIMIT stops the walk early. Sorting every match first would cost time
    proportional to how common the word is across the whole fleet.
    """
    if order not in ("asc", "desc"):
        raise StoreQueryError(f"order must be 'asc' or 'desc', not {order!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise StoreQueryError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    where: list[str] = []
    params: list[Any] = []
    if query is not None:
        if not query.strip():
            raise StoreQueryError("search query is empty")
        sql = f"SELECT {_E_COLUMNS} FROM events_fts f JOIN events e ON e.id = f.rowid"
        where.append("events_fts MATCH ?")
        params.append(fts_match(query, filters.get("tenant")))
        order_by = f"f.rowid {order.upper()}"
    else:
        sql = f"SELECT {_E_COLUMNS} FROM events e"
        order_by = f"e.id {order.upper()}"
    for column, value in filters.items():
        if value is not None:
            where.append(f"e.{column} = ?")
            params.append(value)
    if since is not None:
        where.append("e.ts >= ?")
        params.append(since)
    if until is not None:
        where.append("e.ts < ?")
        params.append(until)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order_by} LIMIT ?"
    params.append(limit)
    return sql, params


def fts_scope_token(tenant: str) -> str:
    """The token the events.fts_scope column yields for a tenant (see store_schema)."""
    return "t" + tenant.encode().hex()


_PUNCTUATED_TERM: Final = re.compile(r"[\w.:/@-]*[.:/@-][\w.:/@-]*")


def fts_match(query: str, tenant: str | None) -> str:
    """The MATCH expression for a user's query: confined to the text columns, and to the
    tenant's scope token when a tenant is given.

    The scope term only speeds the search up. A query that closes the parenthesis and adds
    an OR can escape it, which is why ``e.tenant = ?`` stays in the SQL as the real filter.
    """
    stripped = query.strip()
    if _PUNCTUATED_TERM.fullmatch(stripped):
        # One term with punctuation (`report.weekly`, `missing_field:summary`): FTS5 would
        # read the punctuation as syntax; an operator means the phrase.
        query = f'"{stripped}"'
    match = f"{{summary tags payload_json}} : ({query})"
    if tenant is not None:
        match = f"fts_scope : {fts_scope_token(tenant)} AND {match}"
    return match


# What fts5 reports for a malformed MATCH expression; anything else stays an sqlite3 error.
_FTS_ERROR_MARKERS: Final = ("fts5:", "no such column", "unterminated string", "unknown special")


def fts_error(query: str, exc: sqlite3.OperationalError) -> StoreQueryError | None:
    message = str(exc)
    if any(marker in message for marker in _FTS_ERROR_MARKERS):
        return StoreQueryError(f"invalid search query {query!r}: {message}")
    return None


def link_from_row(row: tuple[Any, ...]) -> StoredLink:
    return StoredLink(
        from_event=row[0],
        to_event=row[1],
        type=LinkType(row[2]),
        created_by_event=row[3],
        created_at=row[4],
        to_key=row[5] if len(row) > 5 else None,
    )


def gap_from_row(row: tuple[Any, ...]) -> SeqGap:
    return SeqGap(
        tenant=row[0],
        host=row[1],
        boot_id=row[2],
        min_seq=row[3],
        max_seq=row[4],
        stored=row[5],
        missing=row[6],
    )
