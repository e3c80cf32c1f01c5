"""A batch stored at once gives exactly the rows, ids and links of the same events stored one
at a time (the rebuild path), whatever mix of new events, redeliveries, key clashes and links
to earlier, later or missing targets it holds. Real SQLite files."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.events.store.core import EventStore
from protocol.events import Event, EventLink, LinkType
from tests.controller.test_store import dump, fts_is_consistent

KEYS = ["k1", "k2", "k3", "h1:b1:1", "h2:b1:2"]  # the last two name default keys

events_st = st.builds(
    lambda tenant, host, session, boot, seq, key, links: Event(
        tenant=tenant,
        host=host,
        session=session,
        boot_id=boot,
        seq=seq,
        ts=1_700_000_000.0 + seq,
        event_type="run.state",
        summary=f"event {host} {seq} {key or ''}",
        idempotency_key=key,
        links=links,
    ),
    tenant=st.sampled_from(["acme", "globex"]),
    host=st.sampled_from(["h1", "h2"]),
    # Keys are unique per session: sessions and hosts that share one must still agree.
    session=st.sampled_from(["coder", "reviewer"]),
    boot=st.sampled_from(["b1", "b2"]),
    seq=st.integers(0, 4),
    key=st.none() | st.sampled_from(KEYS[:3]),
    links=st.lists(
        st.builds(EventLink, type=st.sampled_from(list(LinkType)), target=st.sampled_from(KEYS)),
        max_size=2,
    ),
)
batches_st = st.lists(st.lists(events_st, min_size=1, max_size=8), min_size=1, max_size=5)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches_st)
def test_a_batch_gives_the_rows_of_one_at_a_time(
    tmp_path_factory, batches: list[list[Event]]
) -> None:
    tmp: Path = tmp_path_factory.mktemp("batch")
    stamps = [100.0 + n for n, batch in enumerate(batches) for _ in batch]
    with EventStore(tmp / "batched.db") as batched:
        for n, batch in enumerate(batches):
            ids = batched.insert_many(batch, received_at=100.0 + n)
            for event, event_id in zip(batch, ids, strict=True):
                if event_id is not None:  # the id is the row holding this very event
                    row = batched.get(event_id)
                    assert row is not None
                    assert (row.tenant, row.host, row.boot_id, row.seq) == (
                        event.tenant,
                        event.host,
                        event.boot_id,
                        event.seq,
                    )
    given_stamps = iter(stamps)
    with EventStore(tmp / "single.db") as single:  # rebuild stores one event at a time
        single.rebuild(
            list(itertools.chain(*batches)), received_at=lambda _event: next(given_stamps)
        )
    assert dump(tmp / "batched.db") == dump(tmp / "single.db")
    assert fts_is_consistent(tmp / "batched.db")
