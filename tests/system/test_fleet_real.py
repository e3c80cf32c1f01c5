"""The real agent CLIs under the whole fleet: a controller, a host agent whose roster runs
Claude Code, Codex and pi (pinned, from npm) in tmux against the fake model, and the `fleet`
CLI. This is issue 14's list of what must hold for each runtime, end to end; the parts
(screen rules, paste, hooks, emission parsing) have their own faster tests.

One fleet per module (a cold start of three node CLIs costs ~10 s); every test leaves its
session idle for the next one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import SessionSpec
from controller.natsserver.embedded import EmbeddedNats
from tests.support import realcli, runtime_home
from tests.support.fake_model import FakeModel, Script, stream, text, tool_call
from tests.support.fleet import Fleet, Proc, wait_for

RUNTIMES = ["claude", "codex", "pi"]
APPROVING = ["claude", "codex"]  # pi has no approvals (docs/runtimes.md)
LONG_ANSWER = " ".join(f"tok{i}" for i in range(400))


def block(marker: str) -> str:
    body = json.dumps({"event_type": "test.marker", "summary": f"marker {marker}"})
    return f"Here it is.\n\n<!--FLEET_EVENTS_BEGIN-->\n{body}\n<!--FLEET_EVENTS_END-->\n\nDone."


def make_script(touch_dir: Path) -> Script:
    script = Script()
    for rt in RUNTIMES:
        script.on(f"ping-{rt}", text(f"pong-{rt} answered"))
        script.on(f"multi-{rt}", text(f"multi-{rt} answered"))
        script.on(f"long-{rt}", text(f"long-{rt} answered"))
        script.on(f"stream15-{rt}", stream(LONG_ANSWER, 15))
        script.on(f"stream3-{rt}", stream("three seconds of words, then done", 3))
        script.on(f"forever-{rt}", stream(LONG_ANSWER, 60))
        script.on(f"tool-{rt}", tool_call(f"touch {touch_dir / rt}"))
        for n in (1, 2):
            script.on(f"emit{n}-{rt}", text(block(f"mk{n}-{rt}-{uuid.uuid4().hex[:6]}")))
    return script


@dataclass
class RealFleet:
    fleet: Fleet
    tenant: str
    socket: str
    model: FakeModel
    touch_dir: Path
    agent: Proc

    def rows(self) -> dict[str, dict[str, Any]]:
        return {
            r["session"]["name"]: r["session"]
            for r in self.fleet.ps("--tenant", self.tenant)
            if r.get("session")
        }

    def state(self, session: str) -> str | None:
        """The session's state as `fleet ps` shows it (asked in-process: polled 5 a second)."""
        rows = {r["session"]["name"]: r["session"] for r in self.fleet.api_ps(self.tenant)}
        row = rows.get(session)
        return row["state"] if row else None

    def wait_state(self, session: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        try:
            return wait_for(
                lambda: (
                    (self.rows().get(session) or {}).get("state") == state and self.rows()[session]
                ),
                timeout=timeout,
                interval=0.3,
                what=f"{session} {state} in fleet ps",
            )
        except AssertionError as exc:  # say what the fleet saw instead
            row = self.rows().get(session)
            explain = self.fleet.cli("explain", self.target(session)).stdout
            screen = self.pane(session).capture()
            raise AssertionError(
                f"{exc}\nrow: {row}\nexplain: {explain}\nscreen:\n{screen}"
            ) from None

    def cli_json(self, *args: str, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
        result = self.fleet.cli(*args, "--json", timeout=timeout)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def events(self, session: str, event_type: str | None = None) -> list[dict[str, Any]]:
        args = ["events", "search", "--tenant", self.tenant, "--session", session]
        args += ["--limit", "500", "--json"]
        if event_type:
            args += ["--type", event_type]
        result = self.fleet.cli(*args)
        assert result.returncode == 0, result.stderr
        return sorted((json.loads(x) for x in result.stdout.splitlines()), key=lambda e: e["id"])

    def target(self, session: str) -> str:
        return f"{self.tenant}/h1/{session}"

    def pane(self, session: str) -> realcli.Pane:
        return realcli.Pane(realcli.Tmux.existing(self.socket), f"={session}:")

    def submit(self, session: str, prompt: str) -> None:
        """Type a prompt the way a person at the pane would (not through `fleet send`)."""
        realcli.submit(self.pane(session), prompt)

    def idle_again(self, session: str) -> None:
        self.wait_state(session, "idle", timeout=40)


@pytest.fixture(scope="module")
def real(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealFleet]:
    binaries = {rt: realcli.require_cli(rt) for rt in RUNTIMES}
    tmp = tmp_path_factory.mktemp("fleet-real")
    touch_dir = tmp / "touched"
    touch_dir.mkdir()
    model = FakeModel(make_script(touch_dir)).start()
    fleet = Fleet(nats_server, tmp)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    socket = f"fleet-real-{uuid.uuid4().hex[:8]}"
    sessions = []
    for rt in RUNTIMES:
        root = tmp / rt
        launch = runtime_home.seed(rt, root, root / "project", model.url, binary=str(binaries[rt]))
        env = realcli.node_path_env(launch.env)
        sessions.append(
            SessionSpec(name=rt, runtime=rt, command=launch.argv, cwd=str(launch.cwd), env=env)
        )
    try:
        fleet.start_controller(fleet.controller_config([tenant]))
        config = fleet.agent_config(
            tenant, "h1", socket, sessions, restart_backoff_s=0.5, window_width=120
        )
        agent = fleet.start_agent(config)
        rf = RealFleet(fleet, tenant, socket, model, touch_dir, agent)
        for rt in RUNTIMES:
            rf.wait_state(rt, "idle", timeout=60)
        yield rf
    finally:
        fleet.stop_all()
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
        model.stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_idle_detected_without_drift(real: RealFleet, runtime: str) -> None:
    row = real.wait_state(runtime, "idle")
    assert row["runtime_observed"] == runtime, row
    flags = [r for r in real.fleet.ps("--tenant", real.tenant) if r.get("session")]
    mine = next(r for r in flags if r["session"]["name"] == runtime)
    assert "drift" not in [str(f).lower() for f in mine.get("flags", [])], mine


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_working_through_a_15s_streamed_answer(real: RealFleet, runtime: str) -> None:
    real.submit(runtime, f"please stream15-{runtime} now")
    request = real.model.wait_for_prompt(f"stream15-{runtime}", 20)
    states: list[str | None] = []
    while not request.done.is_set() and len(states) < 200:
        states.append(real.state(runtime))
        time.sleep(0.2)
    assert len(states) >= 10, states
    working = sum(s == "working" for s in states) / len(states)
    assert working >= 0.8, f"working in {working:.0%} of {len(states)} polls: {states}"
    real.idle_again(runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_started_and_completed_for_a_3s_answer(real: RealFleet, runtime: str) -> None:
    before = {e["id"] for e in real.events(runtime, "run.state")}
    real.submit(runtime, f"please stream3-{runtime} now")
    real.model.wait_for_prompt(f"stream3-{runtime}", 20)

    def run_states() -> dict[str, set[str]] | None:
        runs: dict[str, set[str]] = {}
        for e in real.events(runtime, "run.state"):
            if e["id"] not in before:
                runs.setdefault(e["run_id"], set()).add(e["payload"]["state"])
        done = {r: s for r, s in runs.items() if {"start", "complete"} <= s}
        return done or None

    done = wait_for(run_states, timeout=30, interval=0.5, what="run.state start and complete")
    assert len(done) == 1, done
    real.idle_again(runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kind", ["short", "long", "multi"])
def test_send_verify_reaches_the_model(real: RealFleet, runtime: str, kind: str) -> None:
    marker = {"short": "ping", "long": "long", "multi": "multi"}[kind] + f"-{runtime}"
    message = {
        "short": f"{marker} please",
        "long": f"{marker} " + "x" * 190,
        "multi": f"{marker} line one\nline two\nline three",
    }[kind]
    code, result = real.cli_json("send", real.target(runtime), message)
    assert code == 0, result
    request = real.model.wait_for_prompt(marker, 20)
    assert message.replace("\n", "") in request.prompt.replace("\n", ""), request.prompt
    real.idle_again(runtime)


@pytest.mark.parametrize("runtime", APPROVING)
def test_send_into_a_blocked_session_is_refused(real: RealFleet, runtime: str) -> None:
    touched = real.touch_dir / runtime
    real.submit(runtime, f"please run tool-{runtime}")
    row = real.wait_state(runtime, "blocked", timeout=30)
    code, result = real.cli_json("send", real.target(runtime), "please stop")
    assert code == 1, result
    assert result["outcome"] == "blocked", result
    # The dialog is still there, and nothing was approved.
    assert real.state(runtime) == "blocked", row
    assert not touched.exists()
    real.pane(runtime).send_keys("Escape")  # the operator says no, by hand
    real.idle_again(runtime)
    assert not touched.exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cancel_during_streaming(real: RealFleet, runtime: str) -> None:
    real.submit(runtime, f"please forever-{runtime}")
    request = real.model.wait_for_prompt(f"forever-{runtime}", 20)
    real.wait_state(runtime, "working", timeout=20)
    code, result = real.cli_json("cancel", real.target(runtime))
    assert code == 0 and result["outcome"] == "cancelled", result
    assert request.done.wait(15)
    cancelled = wait_for(
        lambda: real.events(runtime, "run.cancelled"), timeout=15, what="run.cancelled"
    )
    last = cancelled[-1]
    assert last["payload"]["latency_ms"] > 0, last
    assert last["run_id"], last
    real.idle_again(runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_emitted_block_is_stored_exactly_once(real: RealFleet, runtime: str) -> None:
    markers: list[str] = []
    for n in (1, 2):
        real.submit(runtime, f"please emit{n}-{runtime}")
        real.model.wait_for_prompt(f"emit{n}-{runtime}", 20)
        markers.append(f"mk{n}-{runtime}-")

        def found(n: int = n) -> list[dict[str, Any]]:
            return [
                e for e in real.events(runtime, "test.marker") if markers[n - 1] in e["summary"]
            ]

        wait_for(found, timeout=30, interval=0.5, what=f"the emitted block {n}")
        real.idle_again(runtime)
    # The second block arrived after the first was redrawn any number of times: had the
    # first been stored again, it would be here by now.
    for m in markers:
        stored = [e for e in real.events(runtime, "test.marker") if m in e["summary"]]
        assert len(stored) == 1, stored
    errors = real.events(runtime, "validation_error")
    assert not errors, errors


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kill_9_dead_then_restarted(real: RealFleet, runtime: str) -> None:
    row = real.wait_state(runtime, "idle")
    pid, restarts = row["pid"], row["restarts"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        r = real.rows().get(runtime)
        if r and r["restarts"] > restarts and r["pid"] != pid and r["state"] == "idle":
            return r
        return None

    wait_for(restarted, timeout=60, interval=0.5, what=f"{runtime} restarted and idle")
    exits = real.events(runtime, "session.state")
    assert any(e["payload"]["new"] == "exited" for e in exits), exits
