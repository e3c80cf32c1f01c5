"""The attention queue through the CLI: a blocked stub session becomes an item with its
question and resolves itself when answered; ack and snooze; a dead session and a down host
appear and resolve. Real NATS, real tmux, stub sessions."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from controller.attention.queue import AttentionQueue
from controller.attention.rules import AttentionConfig, event_condition, host_conditions
from controller.fleet.state import FleetState
from protocol.attention import AttentionAction, AttentionKind, ItemState
from protocol.events import Event, Severity
from protocol.heartbeat import Heartbeat, SessionSnapshot, SessionState
from tests.support.fleet import Fleet, wait_for
from tests.system.test_steering import cli_json, events, screen, stub, up


def items(fleet: Fleet, tenant: str, *args: str) -> list[dict[str, Any]]:
    result = fleet.cli("attention", "--tenant", tenant, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["items"]


def item_of(fleet: Fleet, tenant: str, kind: str, *args: str) -> dict[str, Any] | None:
    return next((i for i in items(fleet, tenant, *args) if i["kind"] == kind), None)


def block(fleet: Fleet, session: str) -> None:
    code, result = cli_json(fleet, "send", session, "/confirm delete it")
    assert (code, result["outcome"]) == (0, "delivered"), result


def answer_no(fleet: Fleet, session: str) -> None:
    for key in ("n", "enter"):
        code, result = cli_json(fleet, "answer", session, key)
        assert (code, result["outcome"]) == (0, "ok"), result


def test_a_blocked_session_is_an_item_until_its_dialog_ends(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    assert items(fleet, tenant) == []
    block(fleet, "coder")
    item = wait_for(lambda: item_of(fleet, tenant, "blocked"), what="a blocked item")
    assert item["session"] == "coder" and item["state"] == "open"
    assert item["question"] == "Proceed? [y/N]", item
    assert "Proceed? [y/N]" in item["why"]
    human = fleet.cli("attention", "--tenant", tenant)
    assert human.returncode == 0 and item["id"] in human.stdout and "blocked" in human.stdout

    answer_no(fleet, "coder")
    wait_for(lambda: "confirm: no" in screen(tmux_socket, "coder"), what="the stub took n")
    wait_for(lambda: item_of(fleet, tenant, "blocked") is None, what="the item resolved")
    done = next(i for i in items(fleet, tenant, "--all") if i["id"] == item["id"])
    assert done["state"] == "resolved" and "dialog answered" in done["resolution"]
    # The store keeps the history: the item's event, and its resolution linked `resolves`.
    opened = wait_for(lambda: events(fleet, tenant, "--type", "attention.opened"), what="opened")
    resolved = wait_for(
        lambda: events(fleet, tenant, "--type", "attention.resolved"), what="resolved event"
    )
    assert opened[0]["payload"]["item"] == item["id"]
    shown = fleet.cli("events", "show", str(resolved[0]["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    links = json.loads(shown.stdout)["outgoing"]
    assert [(ln["type"], ln["to_event"]) for ln in links] == [("resolves", opened[0]["id"])]


def test_ack_and_snooze(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2"), stub("other", "0.2")])
    block(fleet, "coder")
    block(fleet, "other")
    wait_for(lambda: len(items(fleet, tenant)) == 2, what="two blocked items")
    first, second = sorted(items(fleet, tenant), key=lambda i: i["session"])

    code, acked = cli_json(fleet, "attention", "ack", first["id"])
    assert code == 0 and acked["item"]["state"] == "acked", acked
    listed = items(fleet, tenant)
    assert [i["id"] for i in listed] == [second["id"]]
    everything = items(fleet, tenant, "--all")
    assert any(i["id"] == first["id"] and i["state"] == "acked" for i in everything)

    code, snoozed = cli_json(fleet, "attention", "snooze", second["id"], "30m")
    assert code == 0 and snoozed["item"]["state"] == "snoozed", snoozed
    assert snoozed["item"]["snoozed_until"] > snoozed["item"]["since"] + 29 * 60
    assert items(fleet, tenant) == []
    # A short snooze ends and the item, still blocked, is open again.
    cli_json(fleet, "attention", "snooze", second["id"], "1s")
    wait_for(lambda: [i["id"] for i in items(fleet, tenant)] == [second["id"]], what="reopened")

    unknown = fleet.cli("attention", "ack", "nosuchid")
    assert unknown.returncode != 0 and "no attention item" in unknown.stderr
    bad = fleet.cli("attention", "snooze", second["id"], "soon")
    assert bad.returncode != 0 and "not a duration" in bad.stderr


def test_a_dead_session_and_a_down_host_appear_and_resolve(fleet: Fleet, tmux_socket: str) -> None:
    tenant, config, agent = up(fleet, tmux_socket, [stub("coder", "0.2")], restart_backoff_s=3.0)
    pid = wait_for(lambda: _pid(fleet, tenant, "coder"), what="the stub's pid")
    os.kill(pid, signal.SIGKILL)  # a dead pane (remain-on-exit) until the supervisor acts
    # tmux may show the pane dead a pass before its exit signal: the item says it once known.
    dead = wait_for(
        lambda: (i := item_of(fleet, tenant, "dead")) and "signal 9" in i["why"] and i,
        what="a dead item naming signal 9",
    )
    assert dead["session"] == "coder", dead
    # The supervisor restarts it: the item resolves itself.
    wait_for(lambda: item_of(fleet, tenant, "dead") is None, timeout=30, what="dead resolved")
    done = next(i for i in items(fleet, tenant, "--all") if i["id"] == dead["id"])
    assert done["resolution"] == "session alive again"

    agent.signal(signal.SIGKILL)
    down = wait_for(lambda: item_of(fleet, tenant, "host_down"), timeout=30, what="host down")
    assert down["session"] is None and down["severity"] == "critical"
    fleet.start_agent(config)
    wait_for(lambda: item_of(fleet, tenant, "host_down") is None, timeout=30, what="host back")


def _pid(fleet: Fleet, tenant: str, session: str) -> int | None:
    for row in fleet.ps("--tenant", tenant):
        snap = row["session"]
        if snap and snap["name"] == session and snap["pane"] == "alive":
            return snap["pid"]
    return None


# -- rules and queue, in-process -------------------------------------------------------------
def _event(event_type: str, **kw: Any) -> Event:
    return Event(
        tenant="t",
        host="h",
        session="s",
        boot_id="b",
        seq=kw.pop("seq", 1),
        ts=100.0,
        event_type=event_type,
        summary="look",
        idempotency_key=kw.pop("key", "k1"),
        **kw,
    )


def test_only_known_attention_candidates_push() -> None:
    flagged = {"attention_candidate": True, "operator_action_required": True}
    assert event_condition(_event("made.up.type", **flagged)) is None  # unknown never pushes
    assert event_condition(_event("run.completed")) is None  # nothing to act on
    cond = event_condition(_event("run.completed", **flagged))
    assert cond is not None and cond.kind is AttentionKind.ACTION_REQUIRED
    risk = event_condition(_event("tool_call", attention_candidate=True, risk_detected=True))
    assert risk is not None and risk.kind is AttentionKind.RISK
    assert risk.severity is Severity.ERROR


def test_a_run_done_with_artifacts_is_an_item_to_review() -> None:
    refs = {"artifact_refs": ["https://forge.example/pr/7"]}
    review = event_condition(_event("run.completed", **refs))
    assert review is not None and review.kind is AttentionKind.REVIEW
    assert "https://forge.example/pr/7" in review.why
    assert event_condition(_event("tool_result", **refs)) is None  # only a finished run
    assert event_condition(_event("made.up.done", **refs)) is None  # unknown never pushes


def test_queue_order_ack_snooze_and_resolution() -> None:
    clock = [1000.0]
    queue = AttentionQueue(wall=lambda: clock[0])
    cond = event_condition(_event("run.error", attention_candidate=True, severity=Severity.ERROR))
    assert cond is not None
    risky = queue.open(cond)
    warn = queue.open(
        event_condition(
            _event("run.state", attention_candidate=True, severity=Severity.WARNING, key="k2")
        )
    )
    assert risky and warn and queue.open(cond) is None  # one item per condition
    assert [i.id for i in queue.listing()] == [risky.item.id, warn.item.id]  # severe first
    assert queue.act(warn.item.id, AttentionAction.ACK, 0, "ann").item.state is ItemState.ACKED
    assert [i.id for i in queue.listing()] == [risky.item.id]
    queue.act(risky.item.id, AttentionAction.SNOOZE, 60, "ann")
    assert queue.listing() == [] and queue.expire() == []
    clock[0] += 61
    assert [c.what for c in queue.expire()] == ["reopened"]
    [done] = queue.resolve_caused_by(["k1"], "run.completed")
    assert done.item.state is ItemState.RESOLVED and done.item.resolution
    assert [i.id for i in queue.listing(include_all=True)] == [risky.item.id, warn.item.id]


def test_stuck_is_working_with_no_output_for_the_runtimes_limit() -> None:
    state = FleetState()
    now = time.time()
    snap = SessionSnapshot(
        name="s",
        runtime_configured="stub",
        runtime_observed="stub",
        state=SessionState.WORKING,
        state_since=now - 900,
        last_output_at=now - 120,
    )
    hb = Heartbeat(
        tenant="t",
        host="h",
        boot_id="b",
        seq=1,
        sent_at=now,
        interval_s=5.0,
        agent_version="x",
        sessions=[snap],
    )
    state.on_heartbeat(hb)
    entry = state.hosts[("t", "h")]
    kinds = lambda config: [c.kind for c in host_conditions(entry, now, config)]  # noqa: E731
    assert kinds(AttentionConfig()) == []  # 2 minutes silent: under the 10-minute default
    stub_limit = AttentionConfig(stuck_after_s_by_runtime={"stub": 60.0})
    assert kinds(stub_limit) == [AttentionKind.STUCK]
    assert kinds(AttentionConfig(stuck_after_s_by_runtime={"claude": 60.0})) == []


def test_a_dead_item_learns_the_exit_status_when_tmux_reports_it() -> None:
    from controller.attention.queue import AttentionQueue
    from controller.attention.rules import Condition

    queue = AttentionQueue()
    where = (AttentionKind.DEAD, Severity.ERROR, "t", "h", "s")
    first = Condition(*where, "session dead (dead)", 5.0)
    opened = queue.open(first)
    assert opened is not None and opened.what == "opened"
    known = Condition(
        AttentionKind.DEAD, Severity.ERROR, "t", "h", "s", "session dead (signal 9)", 6.0
    )
    updated = queue.open(known)
    assert updated is not None and updated.what == "updated"
    assert updated.item.why == "session dead (signal 9)" and updated.item.since == 5.0
    assert queue.open(known) is None  # nothing new
