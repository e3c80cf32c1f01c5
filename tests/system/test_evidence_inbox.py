"""The weekly digest as a comment on the evidence-inbox issue: a real controller on a real
nats-server, `fleet report weekly` run twice for one week as a timer firing twice, a local
HTTP receiver standing in for the forge. One comment, the report's Markdown with its
chart, the auth header of the forge's kind; the token in no stored event, no log line and
no status; `fleet report baseline` counting the reaction decisions it saw."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from controller.events.store.core import EventStore
from controller.reactions.sinks import Sink, SinkKind
from controller.reports.inbox import EvidenceInbox, comment
from protocol.events import Event
from protocol.reports_api import WeeklyReport
from tests.controller.test_sinks import TOKEN, Receiver
from tests.support.fleet import Fleet, wait_for
from tests.system.test_steering import tenant_id

WEEK = "2026-W47"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "forge.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def reactions(url: str, kind: str, token: Path) -> str:
    root = f"{url}/api/v1" if kind == "forgejo" else url
    return f"""
[sinks.forge]
kind = "{kind}"
url = "{root}"
repo = "ops/fleet"
issue = 8
token_file = "{token}"

[[rules]]
name = "digest-posted"
event_type = ["report.weekly"]
action = "notify"
sink = "forge"

[[rules]]
name = "never"
event_type = ["report.weekly"]
text = "^no such summary$"
action = "notify"
sink = "forge"
"""


def counters(fleet: Fleet) -> dict[str, int]:
    status = fleet.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert TOKEN not in status.stdout
    counts: dict[str, int] = json.loads(status.stdout)["counters"]
    return counts


@pytest.mark.parametrize("kind", ["forgejo", "github"])
def test_the_weekly_digest_reaches_the_inbox_once_per_week(
    fleet: Fleet, receiver: Receiver, token_file: Path, kind: str
) -> None:
    tenant = tenant_id()
    root = f"{receiver.url}/api/v1" if kind == "forgejo" else receiver.url
    inbox = Sink(
        kind=SinkKind(kind), url=root, repo="ops/fleet", issue=7, token_file=str(token_file)
    )
    (fleet.tmp / "controller").mkdir(exist_ok=True)
    (fleet.tmp / "controller" / "reactions.toml").write_text(
        reactions(receiver.url, kind, token_file)
    )
    fleet.start_controller(fleet.controller_config([tenant], evidence_inbox=inbox))
    out = fleet.tmp / "reports"
    out.mkdir()

    def timer() -> str:  # what fleet-report.service runs, for one week
        done = fleet.cli("report", "weekly", "--week", WEEK, "-o", str(out), timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = timer()
    assert f"evidence inbox: delivered to {kind} ops/fleet#7 (HTTP 201)" in first, first
    inbox_path = "/repos/ops/fleet/issues/7/comments"
    if kind == "forgejo":
        inbox_path = "/api/v1" + inbox_path
    posts = [h for h in receiver.hits if h.path == inbox_path]
    assert len(posts) == 1
    post = posts[0]
    report = msgspec.json.decode(
        (out / "fleet-weekly-2026-47.json").read_bytes(), type=WeeklyReport
    )
    body = post.json()["body"]
    assert body == comment(report)
    assert body.startswith(f"# Fleet weekly report {WEEK}") and "Runs per day" in body
    assert "```\nMon █" in body  # the chart, drawn in text
    if kind == "github":
        assert post.headers["Authorization"] == f"Bearer {TOKEN}"
        assert post.headers["Accept"] == "application/vnd.github+json"
    else:
        assert post.headers["Authorization"] == f"token {TOKEN}"

    second = timer()  # the timer firing again for the same week
    assert f"evidence inbox: already posted for {WEEK}" in second, second
    # Both ways in have decided: this second answer, and the leader's look at the stored
    # report.weekly event of the first (the second's is a duplicate, never stored).
    wait_for(lambda: counters(fleet).get("inbox_already_posted", 0) >= 2, what="both looked")
    assert len([h for h in receiver.hits if h.path == inbox_path]) == 1
    c = counters(fleet)
    assert c.get("inbox_delivered") == 1 and "inbox_dead_letter" not in c

    # The reaction on report.weekly went to the forge sink too (issue 8), with a skip beside.
    wait_for(
        lambda: any(h.path.endswith("/issues/8/comments") for h in receiver.hits),
        what="the reaction's comment",
    )

    def recorded() -> bool:
        types = {e["event_type"] for e in events(fleet, tenant)}
        return {"reaction.delivery", "report.inbox"} <= types

    wait_for(recorded, what="delivery and inbox records")
    stored = events(fleet, tenant)
    [record] = [e for e in stored if e["event_type"] == "report.inbox"]
    assert record["payload"]["outcome"] == "delivered" and record["payload"]["week"] == WEEK
    [delivery] = [e for e in stored if e["event_type"] == "reaction.delivery"]
    assert delivery["payload"]["detail"] == f"{kind} HTTP 201"
    # The token: in the Authorization header only, never in an event, a log line or a status.
    assert TOKEN not in json.dumps(stored)
    assert TOKEN not in (fleet.tmp / "controller.log").read_text(errors="replace")

    baseline = fleet.cli("report", "baseline", "--json", timeout=60)
    assert baseline.returncode == 0, baseline.stderr
    rates = json.loads(baseline.stdout)["reactions"]
    assert (rates["decisions"], rates["matched"], rates["skipped"]) == (2, 1, 1)
    assert (rates["match_rate"], rates["skip_rate"]) == (0.5, 0.5)
    assert rates["skip_reasons"] == [{"key": "text", "count": 1}]
    assert (rates["delivered"], rates["failed"]) == (1, 0)
    md = fleet.cli("report", "baseline", timeout=60).stdout
    assert "- reactions: 2 decisions, matched 50.0%, skipped 50.0%" in md


def events(fleet: Fleet, tenant: str) -> list[dict[str, Any]]:
    result = fleet.cli("events", "search", "--tenant", tenant, "--limit", "500", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(x) for x in result.stdout.splitlines()]


def test_only_the_leader_posts_and_a_failed_post_is_tried_again(
    tmp_path: Path, receiver: Receiver, token_file: Path
) -> None:
    store = EventStore(tmp_path / "events.db")
    store.open()
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)
        store.insert_many([event], 0.0)  # as the ingest would, once the stream delivers it

    leads = False

    async def leading() -> bool:
        return leads

    counters: dict[str, int] = {}
    sink = Sink(
        kind=SinkKind.GITHUB,
        url=f"{receiver.url}/fail",
        repo="o/r",
        issue=3,
        token_file=str(token_file),
        retries=0,
    )
    inbox = EvidenceInbox(sink, store, None, ["acme"], publish, counters, leading)
    assert anyio.run(inbox.offer, WEEK, None) == "left to the leader"
    assert receiver.hits == [] and published == []
    leads = True
    said = anyio.run(inbox.offer, WEEK, None)
    assert said == "failed to github o/r#3 (HTTP 500)" and counters["inbox_dead_letter"] == 1
    assert [e.payload["outcome"] for e in published] == ["failed"]
    # A failure is recorded under a key of its own: the next run tries again.
    inbox.sink = msgspec.structs.replace(sink, url=receiver.url)
    assert anyio.run(inbox.offer, WEEK, None) == "delivered to github o/r#3 (HTTP 201)"
    # A fresh inbox (a restart, or the next leader) finds the week in the store.
    again = EvidenceInbox(inbox.sink, store, None, ["acme"], publish, counters, leading)
    assert anyio.run(again.offer, WEEK, None) == f"already posted for {WEEK}"
    assert len(receiver.hits) == 2
    assert all(TOKEN not in json.dumps(msgspec.to_builtins(e)) for e in published)
    store.close()
