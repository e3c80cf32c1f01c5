"""The controller's event store, on real SQLite files: what gets stored and what reads return."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from controller.events.store.core import (
    EventStore,
    SchemaVersionError,
    SeqGap,
    StoredEvent,
    StoredLink,
    StoreError,
    StoreQueryError,
)
from controller.events.store.insert import insert_batch
from controller.events.store.schema import MIGRATIONS, SCHEMA_VERSION, _statements, migrate
from protocol.events import Event, EventLink, LinkType, Severity, SourceKind

EventFactory = Callable[..., Event]


@pytest.fixture
def make_event() -> EventFactory:
    """Events with sensible defaults; seq counts up per (tenant, host, boot_id) unless given."""
    seqs: dict[tuple[str, str, str], int] = {}

    def make(**fields: Any) -> Event:
        fields.setdefault("tenant", "acme")
        fields.setdefault("host", "h1")
        fields.setdefault("boot_id", "b1")
        boot = (fields["tenant"], fields["host"], fields["boot_id"])
        if "seq" not in fields:
            seqs[boot] = seqs.get(boot, 0) + 1
            fields["seq"] = seqs[boot]
        fields.setdefault("session", "coder")
        fields.setdefault("ts", 1_700_000_000.0 + fields["seq"])
        fields.setdefault("event_type", "run.state")
        fields.setdefault("summary", f"event {fields['seq']}")
        return Event(**fields)

    return make


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "events.db") as opened:
        yield opened


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every store table, read straight from the file."""
    with closing(sqlite3.connect(path)) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
            for table in ("events", "event_links", "pending_links", "boot_seqs")
        }


def fts_is_consistent(path: Path) -> bool:
    with closing(sqlite3.connect(path)) as conn:
        try:
            conn.execute("INSERT INTO events_fts (events_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError:
            return False
        return True


# -- idempotency ------------------------------------------------------------------------------


def test_same_event_twice_is_stored_once(store: EventStore, make_event: EventFactory) -> None:
    event = make_event(summary="build started")
    assert store.insert_many([event], received_at=10.0) == [1]
    assert store.insert_many([event], received_at=11.0) == [None]
    assert store.count() == 1
    stored = store.get(1)
    assert stored is not None
    assert stored.received_at == 10.0  # the first copy stands


def test_duplicates_within_one_batch_are_reported(
    store: EventStore, make_event: EventFactory
) -> None:
    first, second = make_event(), make_event()
    assert store.insert_many([first, second, first], received_at=1.0) == [1, 2, None]


def test_same_idempotency_key_with_another_seq_is_stored_once(
    store: EventStore, make_event: EventFactory
) -> None:
    before_restart = make_event(boot_id="b1", seq=7, idempotency_key="run-42-done")
    after_restart = make_event(boot_id="b2", seq=1, idempotency_key="run-42-done")
    assert store.insert_many([before_restart, after_restart], received_at=1.0) == [1, None]
    assert store.count() == 1


def test_idempotency_keys_do_not_cross_tenants(store: EventStore, make_event: EventFactory) -> None:
    ours = make_event(tenant="acme", idempotency_key="k")
    theirs = make_event(tenant="globex", idempotency_key="k")
    assert store.insert_many([ours, theirs], received_at=1.0) == [1, 2]
    found = store.find_by_key("k", tenant="globex")
    assert found is not None and found.id == 2


def test_one_key_from_two_sessions_stores_both(store: EventStore, make_event: EventFactory) -> None:
    """Keys are scoped by (tenant, host, session), issue 15: a session (even a shell opened by
    hand on the agent's socket) can neither pre-empt nor suppress another session's event."""
    victim = make_event(session="coder", idempotency_key="run-7-done", summary="tests pass")
    squatter = make_event(session="intruder", idempotency_key="run-7-done", summary="fake")
    other_host = make_event(host="h2", session="coder", idempotency_key="run-7-done")
    assert store.insert_many([squatter], received_at=1.0) == [1]  # the squatter comes first
    assert store.insert_many([victim, other_host], received_at=2.0) == [2, 3]
    found = store.find_by_key("run-7-done", "acme", "h1", "coder")
    assert found is not None and found.summary == "tests pass"
    # Within one session a repeat is still dropped, in a batch and one by one.
    again = make_event(session="coder", idempotency_key="run-7-done", summary="again")
    assert store.insert_many([again, again], received_at=3.0) == [None, None]
    assert store.count() == 3


def test_a_version_1_store_is_migrated_with_its_rows_ids_and_links(
    tmp_path: Path, make_event: EventFactory
) -> None:
    path = tmp_path / "events.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        for statement in _statements(MIGRATIONS[0]):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
    # Rows written the v1 way: the store's own insert path on the v1 schema.
    plan = make_event(idempotency_key="plan", summary="the plan")
    review = make_event(
        idempotency_key="rv", links=[EventLink(type=LinkType.RESOLVES, target="plan")]
    )
    waiting = make_event(links=[EventLink(type=LinkType.CAUSED_BY, target="later")])
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        assert insert_batch(conn, [plan, review, waiting], [1.0, 1.0, 1.0]) == [1, 2, 3]
        conn.execute("COMMIT")
    before = dump(path)
    with EventStore(path) as store:
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert dump(path) == before  # same rows, same ids, same links
        assert fts_is_consistent(path)
        assert [e.id for e in store.search("plan")] == [1]
        # The new uniqueness holds on the migrated file, and the pending link still resolves.
        twin = make_event(session="other", idempotency_key="plan")
        later = make_event(idempotency_key="later")
        assert store.insert_many([twin, plan, later], received_at=2.0) == [4, None, 5]
        assert [link.to_event for link in store.links(3)[0]] == [5]


def test_event_without_key_gets_its_message_id(store: EventStore, make_event: EventFactory) -> None:
    store.insert_many([make_event(host="h9", boot_id="boot7", seq=3)], received_at=1.0)
    found = store.find_by_key("h9:boot7:3")
    assert found is not None
    assert (found.host, found.boot_id, found.seq) == ("h9", "boot7", 3)
    assert store.find_by_key("h9:boot7:4") is None


def test_stored_event_keeps_every_field(store: EventStore, make_event: EventFactory) -> None:
    event = make_event(
        summary="tests failing",
        source_kind=SourceKind.SYSTEM,
        tags=["ci", "red"],
        payload={"failed": 3, "suite": {"name": "unit"}},
        severity=Severity.ERROR,
        confidence=0.75,
        provenance="pane output",
        idempotency_key="ci-1",
        dedupe_key="ci",
        attention_candidate=True,
        operator_action_required=True,
        risk_detected=True,
        artifact_refs=["file:///tmp/log.txt"],
        run_id="run-1",
    )
    [event_id] = store.insert_many([event], received_at=99.5)
    assert event_id is not None
    stored = store.get(event_id)
    assert stored == StoredEvent(
        id=event_id,
        tenant="acme",
        host="h1",
        session="coder",
        boot_id="b1",
        seq=event.seq,
        ts=event.ts,
        received_at=99.5,
        event_type="run.state",
        summary="tests failing",
        tags=["ci", "red"],
        payload={"failed": 3, "suite": {"name": "unit"}},
        severity=Severity.ERROR,
        confidence=0.75,
        provenance="pane output",
        source_kind=SourceKind.SYSTEM,
        idempotency_key="ci-1",
        dedupe_key="ci",
        attention_candidate=True,
        operator_action_required=True,
        risk_detected=True,
        artifact_refs=["file:///tmp/log.txt"],
        run_id="run-1",
    )


def test_results_encode_as_json(store: EventStore, make_event: EventFactory) -> None:
    a, b = (
        make_event(idempotency_key="a"),
        make_event(links=[EventLink(type="caused_by", target="a")]),
    )
    store.insert_many([a, b], received_at=1.0)
    stored, link, gap = (
        store.get(2),
        store.links(2)[0][0],
        SeqGap(tenant="t", host="h", boot_id="b", min_seq=1, max_seq=3, stored=2, missing=1),
    )
    for value, kind in ((stored, StoredEvent), (link, StoredLink), (gap, SeqGap)):
        assert msgspec.json.decode(msgspec.json.encode(value), type=kind) == value
    assert b'"type":"caused_by"' in msgspec.json.encode(link)


# -- search -----------------------------------------------------------------------------------


def test_search_finds_words_in_summary_tags_and_payload(
    store: EventStore, make_event: EventFactory
) -> None:
    store.insert_many(
        [
            make_event(summary="deploy finished"),
            make_event(summary="quiet", tags=["flaky-test"]),
            make_event(summary="quiet", payload={"branch": "hotfix"}),
        ],
        received_at=1.0,
    )
    assert [e.id for e in store.search("deploy")] == [1]
    assert [e.id for e in store.search("flaky")] == [2]
    assert [e.id for e in store.search("hotfix")] == [3]
    assert [e.id for e in store.search("quiet")] == [3, 2]
    assert store.search("nowhere") == []


def test_search_filters_combine(store: EventStore, make_event: EventFactory) -> None:
    events = [
        make_event(tenant="acme", host="h1", session="coder", summary="timeout", ts=100.0),
        make_event(tenant="acme", host="h1", session="review", summary="timeout", ts=200.0),
        make_event(tenant="acme", host="h2", session="coder", summary="timeout", ts=300.0),
        make_event(tenant="globex", host="h1", session="coder", summary="timeout", ts=400.0),
        make_event(
            tenant="acme",
            host="h1",
            session="coder",
            summary="timeout",
            ts=500.0,
            event_type="run.error",
        ),
    ]
    store.insert_many(events, received_at=1.0)

    def ids(query: str | None = "timeout", **filters: Any) -> list[int]:
        return [e.id for e in store.search(query, **filters)]

    assert ids() == [5, 4, 3, 2, 1]
    assert ids(tenant="acme") == [5, 3, 2, 1]
    assert ids(tenant="acme", host="h1") == [5, 2, 1]
    assert ids(tenant="acme", host="h1", session="coder") == [5, 1]
    assert ids(tenant="acme", event_type="run.error") == [5]
    assert ids(since=200.0, until=400.0) == [3, 2]  # since inclusive, until exclusive
    assert ids(tenant="acme", order="asc", limit=2) == [1, 2]
    assert ids(None, tenant="globex") == [4]
    assert ids(None, session="review") == [2]
    assert ids(tenant="initech") == []


def test_query_cannot_escape_the_tenant_filter(store: EventStore, make_event: EventFactory) -> None:
    store.insert_many(
        [
            make_event(tenant="acme", summary="public"),
            make_event(tenant="globex", summary="secret"),
        ],
        received_at=1.0,
    )
    assert store.search("x) OR (secret", tenant="acme") == []
    assert [e.tenant for e in store.search("x) OR (secret")] == ["globex"]


def test_search_supports_fts_syntax(store: EventStore, make_event: EventFactory) -> None:
    store.insert_many(
        [make_event(summary="merge conflict in main"), make_event(summary="merged cleanly")],
        received_at=1.0,
    )
    assert [e.id for e in store.search("merge*")] == [2, 1]
    assert [e.id for e in store.search('"conflict in main"')] == [1]
    assert [e.id for e in store.search("merge NOT conflict")] == []
    assert [e.id for e in store.search("summary: cleanly")] == [2]


@pytest.mark.parametrize("query", ['"unterminated', "a OR", "AND", "(open", "nosuchcol: x"])
def test_fts_syntax_error_raises_store_query_error(
    store: EventStore, make_event: EventFactory, query: str
) -> None:
    store.insert_many([make_event()], received_at=1.0)
    with pytest.raises(StoreQueryError, match="invalid search query") as info:
        store.search(query)
    assert isinstance(info.value, ValueError)
    assert query in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": "  "}, "empty"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_search_arguments_raise_store_query_error(
    store: EventStore, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(StoreQueryError, match=message):
        store.search(**kwargs)


def test_tail_pages_in_id_order(store: EventStore, make_event: EventFactory) -> None:
    store.insert_many(
        [make_event(tenant=t) for t in ("acme", "globex", "acme", "acme")], received_at=1.0
    )
    assert [e.id for e in store.tail()] == [1, 2, 3, 4]
    assert [e.id for e in store.tail(after_id=1, limit=2)] == [2, 3]
    assert [e.id for e in store.tail(after_id=1, tenant="acme")] == [3, 4]
    assert store.count() == 4 and store.count("acme") == 3 and store.count("initech") == 0


# -- links ------------------------------------------------------------------------------------


def test_links_are_visible_from_both_ends(store: EventStore, make_event: EventFactory) -> None:
    spawner = make_event(idempotency_key="parent")
    child = make_event(links=[EventLink(type=LinkType.SPAWNED, target="parent")])
    parent_id, child_id = store.insert_many([spawner, child], received_at=5.0)
    assert parent_id is not None and child_id is not None

    outgoing, incoming = store.links(child_id)
    expected = StoredLink(
        from_event=child_id,
        to_event=parent_id,
        type=LinkType.SPAWNED,
        created_by_event=child_id,
        created_at=5.0,
    )
    assert (outgoing, incoming) == ([expected], [])
    assert store.links(parent_id) == ([], [expected])


def test_pending_link_resolves_when_the_target_arrives_late(
    store: EventStore, make_event: EventFactory
) -> None:
    [blocked] = store.insert_many(
        [make_event(links=[EventLink(type=LinkType.BLOCKED_BY, target="review-done")])],
        received_at=1.0,
    )
    assert blocked is not None
    [pending], incoming = store.links(blocked)
    assert (pending.to_event, pending.to_key, incoming) == (None, "review-done", [])

    [target] = store.insert_many([make_event(idempotency_key="review-done")], received_at=2.0)
    assert target is not None
    [resolved], _ = store.links(blocked)
    assert (resolved.to_event, resolved.to_key, resolved.created_at) == (target, None, 1.0)
    assert store.links(target)[1] == [resolved]


def test_pending_links_wait_for_their_own_tenant(
    store: EventStore, make_event: EventFactory
) -> None:
    [waiting] = store.insert_many(
        [make_event(tenant="acme", links=[EventLink(type=LinkType.CAUSED_BY, target="k")])],
        received_at=1.0,
    )
    assert waiting is not None
    store.insert_many([make_event(tenant="globex", idempotency_key="k")], received_at=2.0)
    [still_pending], _ = store.links(waiting)
    assert still_pending.to_event is None


def test_operator_link(store: EventStore, make_event: EventFactory) -> None:
    a, b, other = store.insert_many(
        [make_event(), make_event(), make_event(tenant="globex")], received_at=1.0
    )
    assert a is not None and b is not None and other is not None
    assert store.link(b, a, LinkType.DUPLICATES, created_at=3.0) is True
    assert store.link(b, a, LinkType.DUPLICATES) is False
    assert store.link(b, a, LinkType.SUPERSEDES) is True
    outgoing, _ = store.links(b)
    assert [(link.type, link.created_by_event) for link in outgoing] == [
        (LinkType.DUPLICATES, None),
        (LinkType.SUPERSEDES, None),
    ]
    with pytest.raises(StoreQueryError, match="tenants"):
        store.link(a, other, LinkType.BLOCKS)
    with pytest.raises(StoreQueryError, match="no stored event with id 999"):
        store.link(a, 999, LinkType.BLOCKS)


# -- sequence gaps ----------------------------------------------------------------------------


def test_gaps_count_missing_seqs_per_boot(store: EventStore, make_event: EventFactory) -> None:
    store.insert_many(
        [make_event(boot_id="b1", seq=s) for s in (1, 2, 5)]
        + [make_event(boot_id="b2", seq=s) for s in (1, 2, 3)]
        + [make_event(host="h2", boot_id="b1", seq=s) for s in (3, 4)],
        received_at=1.0,
    )
    assert store.gaps() == [
        SeqGap(tenant="acme", host="h1", boot_id="b1", min_seq=1, max_seq=5, stored=3, missing=2),
        SeqGap(tenant="acme", host="h2", boot_id="b1", min_seq=3, max_seq=4, stored=2, missing=2),
    ]
    assert store.total_gaps() == 4

    # Late arrivals close gaps; duplicates do not count twice.
    store.insert_many([make_event(boot_id="b1", seq=s) for s in (3, 4, 4, 5)], received_at=2.0)
    assert [g.host for g in store.gaps()] == ["h2"]
    assert store.total_gaps() == 2


def test_no_events_no_gaps(store: EventStore) -> None:
    assert store.gaps() == []
    assert store.total_gaps() == 0


# -- schema and life --------------------------------------------------------------------------


def test_migrations_run_on_an_empty_file_and_not_again(
    tmp_path: Path, make_event: EventFactory
) -> None:
    path = tmp_path / "nested" / "events.db"
    with EventStore(path) as store:
        store.insert_many([make_event()], received_at=1.0)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert migrate(conn) == 0  # already current: nothing runs
    with EventStore(path) as store:
        assert store.count() == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = EventStore(path)
    with pytest.raises(SchemaVersionError, match="newer"):
        store.open()
    store.close()


def test_construction_does_no_io_and_closed_store_refuses(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.db"
    store = EventStore(path)
    assert not path.parent.exists()
    with pytest.raises(StoreError, match="not open"):
        store.count()
    with store:
        assert store.count() == 0
    with pytest.raises(StoreError, match="not open"):
        store.search("x")


# -- rebuild ----------------------------------------------------------------------------------


def test_rebuild_gives_the_same_rows_as_the_live_path(
    tmp_path: Path, make_event: EventFactory
) -> None:
    batches = [
        [
            make_event(
                summary="waiting on review",
                links=[EventLink(type=LinkType.BLOCKED_BY, target="rv")],
            ),
            make_event(idempotency_key="plan", tags=["plan"]),
        ],
        [
            make_event(
                idempotency_key="rv", links=[EventLink(type=LinkType.RESOLVES, target="plan")]
            ),
            make_event(boot_id="b2", idempotency_key="plan"),  # duplicate by key
            make_event(seq=9, links=[EventLink(type=LinkType.CAUSED_BY, target="never-arrives")]),
        ],
        [make_event(session="reviewer", payload={"diff": "+1 -1"})],
    ]
    live_path = tmp_path / "live.db"
    received: dict[tuple[str, str, int], float] = {}
    with EventStore(live_path) as live:
        for n, batch in enumerate(batches):
            live.insert_many(batch, received_at=100.0 + n)
            for event in batch:
                received.setdefault((event.host, event.boot_id, event.seq), 100.0 + n)
        live.insert_many(batches[0], received_at=200.0)  # redelivery changes nothing

    replay = [event for batch in batches for event in batch]

    def stamp(event: Event) -> float:
        return received[(event.host, event.boot_id, event.seq)]

    fresh_path = tmp_path / "fresh.db"
    with EventStore(fresh_path) as fresh:
        assert fresh.rebuild(replay, received_at=stamp) == 5
    assert dump(fresh_path) == dump(live_path)

    # Over a store that already holds other rows: truncated, then the same rows again.
    dirty_path = tmp_path / "dirty.db"
    with EventStore(dirty_path) as dirty:
        dirty.insert_many([make_event(tenant="stale", summary="gone") for _ in range(3)], 1.0)
        assert dirty.rebuild(replay, received_at=stamp) == 5
        assert dirty.search("gone") == []
        assert [e.id for e in dirty.search("review")] == [1]
    assert dump(dirty_path) == dump(live_path)
    assert dump(live_path)["pending_links"] != []  # the comparison covered pending links
    assert fts_is_consistent(dirty_path) and fts_is_consistent(live_path)


# -- threads ----------------------------------------------------------------------------------


def test_reader_runs_while_writer_inserts(store: EventStore, make_event: EventFactory) -> None:
    batch_size, batches = 50, 40
    work = [[make_event(summary="tick") for _ in range(batch_size)] for _ in range(batches)]
    errors: list[BaseException] = []
    seen_counts: list[int] = []

    def write() -> None:
        try:
            for batch in work:
                store.insert_many(batch, received_at=1.0)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    # Read from this thread until the final count shows up or the writer has stopped.
    while True:
        writer_alive = writer.is_alive()
        count = store.count()
        seen_counts.append(count)
        if count == batch_size * batches or not writer_alive:
            break
    writer.join()
    assert errors == []
    assert store.count() == batch_size * batches
    # Each batch is one transaction: a reader never sees half of one.
    assert all(count % batch_size == 0 for count in seen_counts)
    assert seen_counts == sorted(seen_counts)
    assert len(store.search("tick", limit=10_000)) == batch_size * batches


def test_reads_are_not_blocked_by_an_open_write_transaction(
    store: EventStore, make_event: EventFactory
) -> None:
    store.insert_many([make_event()], received_at=1.0)
    with closing(sqlite3.connect(store.path, isolation_level=None, timeout=0)) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("DELETE FROM boot_seqs")
        # WAL: the store's reader sees the last commit while another writer holds the lock.
        assert store.count() == 1
        assert store.total_gaps() == 0
        assert len(store.gaps()) == 0
        other.execute("ROLLBACK")


def test_seq_zero_is_outside_the_numbering(store: EventStore, make_event: EventFactory) -> None:
    # Host agents number from 1; a seq 0 must not hide a real gap by being counted.
    store.insert_many([make_event(seq=s) for s in (0, 1, 3)], received_at=1.0)
    assert [(g.min_seq, g.max_seq, g.stored, g.missing) for g in store.gaps()] == [(0, 3, 2, 1)]


def test_a_dotted_or_colon_term_is_searched_as_a_phrase(tmp_path: Path) -> None:
    from protocol.events import Event as _Event

    with EventStore(tmp_path / "events.db") as store:
        store.insert_many(
            [
                _Event(
                    tenant="acme",
                    host="h1",
                    session="s",
                    boot_id="b",
                    seq=1,
                    ts=1.0,
                    event_type="report.weekly",
                    summary="weekly digest",
                    tags=["report.weekly"],
                ),
                _Event(
                    tenant="acme",
                    host="h1",
                    session="s",
                    boot_id="b",
                    seq=2,
                    ts=2.0,
                    event_type="validation_error",
                    summary="bad block",
                    payload={"reason": "missing_field:summary"},
                ),
            ],
            received_at=3.0,
        )
        assert [e.seq for e in store.search("report.weekly")] == [1]
        assert [e.seq for e in store.search("missing_field:summary", tenant="acme")] == [2]
