"""Reaction rules end to end: hot-reloaded TOML, a webhook posted exactly once per dedupe key
within its cooldown, every decision recorded (`reaction.match`, `reaction.skip` with its
reason), a receiver answering 500 retried and counted. Real NATS, real tmux, a stub session,
a local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.reactions.engine import ReactionEngine
from controller.reactions.rules import Action, ReactionsFile, Rule
from protocol.events import Event
from tests.support.fleet import Fleet, wait_for
from tests.system.test_steering import cli_json, events, stub, up


class Receiver:
    def __init__(self) -> None:
        self.hits: dict[str, list[dict[str, Any]]] = {"/ok": [], "/fail": []}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.hits.setdefault(self.path, []).append(json.loads(body))
                self.send_response(200 if self.path == "/ok" else 500)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def rules(url: str) -> str:
    return f"""
[sinks.recv]
url = "{url}/ok"

[sinks.broken]
url = "{url}/fail"
retries = 2

[[rules]]
name = "done"
event_type = ["run.completed"]
session = "coder"
action = "notify"
sink = "recv"
cooldown_s = 600

[[rules]]
name = "to-broken"
event_type = ["run.completed"]
action = "notify"
sink = "broken"
cooldown_s = 600

[[rules]]
name = "picky"
event_type = ["run.started"]
text = "^never this$"
action = "notify"
sink = "recv"
"""


def _counter(fleet: Fleet, name: str) -> int:
    return json.loads(fleet.cli("status", "--json").stdout)["counters"].get(name, 0)


def test_a_rule_posts_once_per_dedupe_key_and_records_every_decision(
    fleet: Fleet, tmux_socket: str, receiver: Receiver
) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    # Written while the controller runs: it picks the file up without a restart.
    (fleet.tmp / "controller" / "reactions.toml").write_text(rules(receiver.url))

    def run(text: str, n: int) -> None:
        code, result = cli_json(fleet, "send", "coder", text)
        assert code == 0, result
        wait_for(
            lambda: len(events(fleet, tenant, "--type", "run.completed")) >= n,
            timeout=30,
            what=f"{n} run.completed",
        )

    run("first", 1)
    wait_for(lambda: len(receiver.hits["/ok"]) == 1, what="one POST")
    posted = receiver.hits["/ok"][0]
    assert posted["rule"] == "done" and posted["event"]["event_type"] == "run.completed"
    run("second", 2)

    def skipped(reason: str, at_least: int = 1) -> bool:
        found = events(fleet, tenant, "--type", "reaction.skip")
        return sum(e["payload"]["reason"] == reason for e in found) >= at_least

    wait_for(lambda: skipped("cooldown"), what="the second run skipped for the cooldown")
    matches = events(fleet, tenant, "--type", "reaction.match")
    assert sorted(m["payload"]["rule_name"] for m in matches) == ["done", "to-broken"]
    assert all(m["payload"]["filter_summary"].startswith("type=run.completed") for m in matches)
    skips = events(fleet, tenant, "--type", "reaction.skip")
    reasons = {(s["payload"]["rule_name"], s["payload"]["reason"]) for s in skips}
    assert ("picky", "text") in reasons and ("done", "cooldown") in reasons, reasons
    assert all(s["payload"]["candidate_count"] >= 1 for s in skips)
    # The 500 receiver: the first attempt and 2 retries, then a dead letter, recorded.
    wait_for(lambda: _counter(fleet, "reaction_dead_letter") == 1, what="dead letter counted")
    assert len(receiver.hits["/fail"]) == 3
    assert _counter(fleet, "reaction_retries") == 2
    assert len(receiver.hits["/ok"]) == 1  # still once: the second run was in the cooldown
    delivery = wait_for(
        lambda: events(fleet, tenant, "--type", "reaction.delivery"), what="deliveries"
    )
    assert {d["payload"]["outcome"] for d in delivery} == {"delivered", "failed"}
    # A broken rules file is one counted warning; the rules in force stay, the daemon runs.
    before = sum(
        e["payload"]["reason"] == "cooldown"
        for e in events(fleet, tenant, "--type", "reaction.skip")
    )
    (fleet.tmp / "controller" / "reactions.toml").write_text("[[rules]]\nname = 'x'\n")
    run("third", 3)
    wait_for(lambda: _counter(fleet, "reaction_rules_invalid") == 1, what="bad file counted")
    wait_for(lambda: skipped("cooldown", before + 2), what="the old rules still decide")


def _event(event_type: str, **kw: Any) -> Event:
    return Event(
        tenant="t",
        host="h",
        session="s",
        boot_id="b",
        seq=1,
        ts=1.0,
        event_type=event_type,
        summary="x",
        **kw,
    )


def test_a_reply_never_goes_into_a_blocked_dialog_unless_it_names_the_choice() -> None:
    plain = Rule(name="nudge", action=Action.REPLY, event_type=["stale"], reply="go on")
    chooses = Rule(
        name="approve", action=Action.REPLY, event_type=["stale"], reply="go on", choice="y"
    )
    engine = ReactionEngine(ReactionsFile(rules=[plain, chooses]))
    decided = {d.rule.name: d.reason for d in engine.decide(_event("stale"), "blocked") if d.rule}
    assert decided == {"nudge": "blocked_dialog", "approve": None}
    assert engine.decide(_event("made.up"), None) == []  # no candidate rule: nothing recorded
    [skip] = engine.decide(_event("made.up", attention_candidate=True), None)
    assert (skip.rule, skip.reason, skip.candidates) == (None, "no_rule", 0)
