"""Steering sessions through the CLI: send --verify, cancel, watch, takeover, spawn/stop,
restart of core sessions. Real NATS, real tmux, stub sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats

from agent.config import AgentConfig, SessionSpec
from agent.control.screenproof import input_row, left_input, needle
from protocol import decode, encode, subjects
from protocol.commands import Command, CommandResult, Outcome, Send, WatchFrame, answer_key
from tests.support.fleet import Fleet, Proc, rows_by_session, wait_for


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def stub(name: str, work: str = "1.0", **env: str) -> SessionSpec:
    return SessionSpec(
        name=name,
        runtime="stub",
        env={"FLEET_STUB_WORK_SECONDS": work, "FLEET_STUB_STEPS": "2", **env},
    )


def up(
    fleet: Fleet, socket: str, sessions: list[SessionSpec], **agent_kw: Any
) -> tuple[str, AgentConfig, Proc]:
    tenant = tenant_id()
    fleet.start_controller(fleet.controller_config([tenant]))
    config = fleet.agent_config(tenant, "h1", socket, sessions, **agent_kw)
    agent = fleet.start_agent(config)

    def idle() -> bool:
        rows = rows_by_session(fleet.ps("--tenant", tenant))
        return len(rows) >= len(sessions) and all(
            r["session"]["state"] == "idle"
            for n, r in rows.items()
            if n in {s.name for s in sessions}
        )

    wait_for(idle, timeout=30, what="sessions idle")
    return tenant, config, agent


def cli_json(
    fleet: Fleet, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fleet"), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "FLEET_NATS_URL": fleet.nats.url, **(env or {})},
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def events(fleet: Fleet, tenant: str, *args: str) -> list[dict[str, Any]]:
    result = fleet.cli("events", "search", "--tenant", tenant, "--limit", "500", "--json", *args)
    assert result.returncode == 0, result.stderr
    return sorted((json.loads(x) for x in result.stdout.splitlines()), key=lambda e: e["id"])


def screen(socket: str, session: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, "capture-pane", "-p", "-t", f"={session}:"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# Screens as Codex 0.171 draws them (tests/fixtures/screens/codex): the composer (U+203A)
# over a status line that names the thread after its first prompt, over the footer.
C = "\u203a"
CODEX_TYPED = [
    "  >_ OpenAI Codex (v0.171.0)",
    "",
    f"{C} ping-1 please",
    "",
    "  fake-model default · /work/project",
    "  ← for agents · ? for shortcuts",
    "",
]
CODEX_TAKEN = [
    "  >_ OpenAI Codex (v0.171.0)",
    f"{C} ping-1 please",
    "• pong answered",
    "",
    f"{C} Ask Codex to do anything",
    "",
    "  fake-model default · /work/project · ping-1 please",
    "  ← for agents · ? for shortcuts",
]


def test_the_text_left_the_input_box() -> None:
    piece = needle("ping-1 please")
    row = input_row(CODEX_TYPED, piece)
    assert row == 2  # over the status line and the footer
    assert not left_input(CODEX_TYPED, piece, row)  # still waiting in the box
    # Taken: the box is empty again, though the status line now shows the text too.
    assert left_input(CODEX_TAKEN, piece, row)
    assert input_row(["stub> "], needle("other")) is None
    assert needle("\n  first line\tcol\nsecond") == "first line col"
    assert needle("long-5d1b " + "x" * 190) == "long-5d1b"  # the x's wrap to the next row
    assert needle("y" * 300) == "y" * 20
    assert input_row(["\u276f [Pasted text #1 +3 lines]", "─" * 10], needle("x" * 1200)) == 1


def test_answer_keys() -> None:
    assert [answer_key(c) for c in ("1", "y", "N", " 3 ")] == ["1", "y", "N", "3"]
    assert [answer_key(c) for c in ("esc", "Escape", "ENTER", "down")] == [
        "Escape",
        "Escape",
        "Enter",
        "Down",
    ]
    # Nothing that quits or interrupts, nothing longer than one key.
    assert [answer_key(c) for c in ("C-c", "C-d", "yes", "12", "", "é", ";")] == [None] * 7


def test_send_verify_delivers_and_proves_it(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder")])
    code, result = cli_json(fleet, "send", "coder", "write the haiku")
    assert code == 0, result
    assert result["outcome"] == "delivered"
    assert result["details"]["proof"] in ("run.started", "screen:working")
    assert result["round_trip_ms"] > 0
    # The text reached the stub's input: it started a run for exactly that prompt.
    started = wait_for(
        lambda: [e for e in events(fleet, tenant, "--type", "run.started")],
        what="run.started stored",
    )
    assert started[0]["payload"]["prompt"] == "write the haiku"
    audit = wait_for(lambda: events(fleet, tenant, "--type", "command"), what="audit event")
    assert audit[0]["source_kind"] == "operator"
    assert audit[0]["payload"]["verb"] == "send"
    assert audit[0]["payload"]["outcome"] == "delivered"


# A composer that shows what is typed and never submits: like Codex taking an Enter that
# arrives with the text as part of a paste. Raw mode, so the tty does not turn Enter into a
# line either; no bracketed-paste mode, so tmux pastes plain text.
SWALLOWER = """
import os, sys, tty
tty.setraw(0)
os.write(1, b"stub> ")
while True:
    data = os.read(0, 1024)
    if not data:
        break
    os.write(1, bytes(c for c in data if c not in (10, 13)))
"""


def test_send_to_a_session_that_never_takes_the_text_is_not_verified(
    fleet: Fleet, tmux_socket: str
) -> None:
    swallower = SessionSpec(name="deaf", runtime="stub", command=[sys.executable, "-c", SWALLOWER])
    up(fleet, tmux_socket, [swallower])
    code, result = cli_json(fleet, "send", "deaf", "anyone there", "--timeout", "20")
    assert code == 3, result
    assert result["outcome"] == "not_verified"
    assert result["details"]["enters"] == 4  # the first Enter and 3 retries into an idle box
    assert "stub> anyone there" in result["screen"]  # the text still sits there, once


# A TUI that takes a prompt without showing it: on Enter it repaints its screen by cursor
# addressing (no newlines, as full-screen TUIs draw) with a `run.started` emission block, and
# keeps the text in its input row; the screen never reads working and the text never leaves
# the box. Only the emission, read off the emulated screen by the event flow, proves it.
SILENT_TAKER = r"""
import json, os, tty
tty.setraw(0)
typed, runs = b"", 0
def paint(block=b""):
    os.write(1, b"\x1b[2J\x1b[1;1Hsilent taker" + block + b"\x1b[7;1Hstub> " + typed)
paint()
while True:
    data = os.read(0, 1024)
    if not data:
        break
    typed += bytes(c for c in data if c not in (10, 13))
    if 13 in data:
        runs += 1
        line = json.dumps({"event_type": "run.started", "summary": f"taken {runs}",
                           "idempotency_key": f"silent-{runs}"}).encode()
        paint(b"\x1b[3;1H<!--FLEET_EVENTS_BEGIN-->\x1b[4;1H" + line
              + b"\x1b[5;1H<!--FLEET_EVENTS_END-->")
"""


def test_send_is_proved_by_an_emitted_run_started(fleet: Fleet, tmux_socket: str) -> None:
    taker = SessionSpec(name="silent", runtime="stub", command=[sys.executable, "-c", SILENT_TAKER])
    tenant, _, _ = up(fleet, tmux_socket, [taker])
    code, result = cli_json(fleet, "send", "silent", "take it quietly", "--timeout", "20")
    assert (code, result["outcome"]) == (0, "delivered"), result
    assert result["details"]["proof"] == "run.started", result
    assert result["details"]["state"] == "idle", result  # the screen alone proves nothing
    started = wait_for(
        lambda: events(fleet, tenant, "--type", "run.started"), what="run.started stored"
    )
    assert started[0]["summary"] == "taken 1", started
    assert "stub> take it quietly" in screen(tmux_socket, "silent")  # still in the box


def test_send_pastes_the_text_whole(fleet: Fleet, tmux_socket: str) -> None:
    """One paste from a tmux buffer: a `;` that ended a 256-character send-keys chunk was
    taken as tmux's command separator and lost (issue 15); the buffer is deleted after."""
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    text = ("x" * 254 + "a;") + " then b; c ;; 'quoted' \"$HOME\" -dash ;"
    code, result = cli_json(fleet, "send", "coder", text)
    assert (code, result["outcome"]) == (0, "delivered"), result
    started = wait_for(
        lambda: events(fleet, tenant, "--type", "run.started"), what="run.started stored"
    )
    assert started[0]["payload"]["prompt"] == text
    buffers = subprocess.run(
        ["tmux", "-L", tmux_socket, "list-buffers"], capture_output=True, text=True, check=False
    ).stdout
    assert "fleet-send" not in buffers
    code, result = cli_json(fleet, "send", "coder", "   ")
    assert (code, result["outcome"]) == (1, "bad_request"), result


def test_send_to_a_blocked_session_is_refused_until_answered(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    code, result = cli_json(fleet, "send", "coder", "/confirm delete it")
    assert (code, result["outcome"]) == (0, "delivered"), result
    wait_for(
        lambda: screen(tmux_socket, "coder").rstrip().endswith("Proceed? [y/N]"),
        what="the question",
    )
    # cancel's interrupt key on a dialog would answer it: refused too, the question pending.
    code, result = cli_json(fleet, "cancel", "coder")
    assert (code, result["outcome"]) == (1, "blocked"), result
    assert screen(tmux_socket, "coder").rstrip().endswith("Proceed? [y/N]")
    # "y" would approve: refused, nothing typed, the question still pending.
    code, result = cli_json(fleet, "send", "coder", "y")
    assert (code, result["outcome"]) == (1, "blocked"), result
    assert result["message"].startswith("blocked: Proceed? [y/N]")
    assert screen(tmux_socket, "coder").rstrip().endswith("Proceed? [y/N]")
    refused = fleet.cli("send", "coder", "y")
    assert refused.returncode == 1 and "blocked: Proceed? [y/N]" in refused.stderr
    assert "confirm:" not in screen(tmux_socket, "coder")
    # Only an explicit answer presses a key there, exactly the one named, and it is audited.
    # The stub's question reads a line: "y", then Enter.
    code, result = cli_json(fleet, "answer", "coder", "y")
    assert (code, result["outcome"]) == (0, "ok"), result
    assert result["details"]["question"] == "Proceed? [y/N]"
    assert screen(tmux_socket, "coder").rstrip().endswith("Proceed? [y/N] y")
    code, result = cli_json(fleet, "answer", "coder", "enter")
    assert (code, result["outcome"]) == (0, "ok"), result
    wait_for(lambda: "confirm: yes" in screen(tmux_socket, "coder"), what="the stub took y")
    answers = wait_for(
        lambda: (a := events(fleet, tenant, "--type", "operator.answer")) and len(a) == 2 and a,
        what="two operator.answer events",
    )
    assert answers[0]["source_kind"] == "operator"
    assert answers[0]["payload"]["question"] == "Proceed? [y/N]"
    assert [a["payload"]["choice"] for a in answers] == ["y", "enter"]
    assert [a["payload"]["key"] for a in answers] == ["y", "Enter"]
    wait_for(lambda: events(fleet, tenant, "--type", "run.completed"), what="the run completed")
    # No dialog: answer presses nothing. A key that could quit is refused before sending.
    code, result = cli_json(fleet, "answer", "coder", "y")
    assert (code, result["outcome"]) == (0, "noop"), result
    bad = fleet.cli("answer", "coder", "C-c")
    assert bad.returncode == 2 and "cannot answer with 'C-c'" in bad.stderr


def test_send_answer_then_text(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    code, result = cli_json(fleet, "send", "coder", "/confirm drop the table")
    assert (code, result["outcome"]) == (0, "delivered"), result
    # Enter takes the default, N; then the text goes to the prompt that follows.
    code, result = cli_json(fleet, "send", "coder", "--answer", "Enter", "do a backup instead")
    assert (code, result["outcome"]) == (0, "delivered"), result
    assert result["details"]["answered"]["question"] == "Proceed? [y/N]"
    prompts = wait_for(
        lambda: (
            (p := [e["payload"]["prompt"] for e in events(fleet, tenant, "--type", "run.started")])
            and len(p) == 2
            and p
        ),
        what="the second run",
    )
    assert prompts == ["/confirm drop the table", "do a backup instead"]
    assert "confirm: no" in screen(tmux_socket, "coder")
    answers = wait_for(
        lambda: events(fleet, tenant, "--type", "operator.answer"), what="operator.answer"
    )
    assert answers[0]["payload"]["choice"] == "Enter"


def test_send_to_a_working_session_is_queued(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "6")])
    code, result = cli_json(fleet, "send", "coder", "the long one")
    assert (code, result["outcome"]) == (0, "delivered"), result
    code, result = cli_json(fleet, "send", "coder", "the next one")
    assert (code, result["outcome"]) == (0, "queued"), result
    assert "enters" not in result["details"]  # one submit key, no retries
    prompts = wait_for(
        lambda: (
            (p := [e["payload"]["prompt"] for e in events(fleet, tenant, "--type", "run.started")])
            and len(p) == 2
            and p
        ),
        timeout=30,
        what="the queued prompt ran after the first",
    )
    assert prompts == ["the long one", "the next one"]


def test_send_to_a_down_host_fails_at_once(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, agent = up(fleet, tmux_socket, [stub("coder")], heartbeat_interval_s=0.3)
    agent.signal(signal.SIGSTOP)
    wait_for(
        lambda: fleet.ps("--tenant", tenant)[0]["host_state"] == "down",
        timeout=15,
        what="host down",
    )
    start = time.monotonic()
    code, result = cli_json(fleet, "send", "coder", "hello", "--timeout", "30")
    took = time.monotonic() - start
    agent.signal(signal.SIGCONT)
    assert code == 1
    assert result["outcome"] == "host_unavailable"
    assert "down" in result["message"]
    assert took < 10  # answered from fleet state: far below the 30 s timeout


def test_expired_command_refused_and_replay_is_a_noop(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.3")])

    async def request(cmd: Command) -> CommandResult:
        nc = await nats.connect(fleet.nats.url)
        try:
            msg = await nc.request(subjects.command(tenant, "h1"), encode(cmd), timeout=20)
            return decode(msg.data, CommandResult)
        finally:
            await nc.close()

    now = time.time()
    expired = Command(
        command_id=uuid.uuid4().hex,
        tenant=tenant,
        host="h1",
        issued_by="test",
        issued_at=now - 60,
        deadline=now - 30,
        body=Send(session="coder", text="too late"),
    )
    result = anyio.run(request, expired)
    assert result.outcome is Outcome.EXPIRED
    assert "too late" not in screen(tmux_socket, "coder")

    once = Command(
        command_id=uuid.uuid4().hex,
        tenant=tenant,
        host="h1",
        issued_by="test",
        issued_at=now,
        deadline=now + 30,
        body=Send(session="coder", text="exactly once"),
    )
    first = anyio.run(request, once)
    second = anyio.run(request, once)
    assert first.outcome is Outcome.DELIVERED
    assert second.outcome is Outcome.DELIVERED and second.replayed
    wait_for(
        lambda: len(events(fleet, tenant, "--type", "run.completed")) >= 1, what="the run completed"
    )
    started = events(fleet, tenant, "--type", "run.started")
    assert [e["payload"]["prompt"] for e in started] == ["exactly once"]
    typed = [ln for ln in screen(tmux_socket, "coder").splitlines() if ln.startswith("stub> ")]
    assert typed == ["stub> exactly once"]  # typed once, so run once


def test_cancel_during_a_run_and_when_idle(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "30")])
    code, result = cli_json(fleet, "cancel", "coder")
    assert (code, result["outcome"]) == (0, "noop")
    assert "idle" in result["message"]
    code, _ = cli_json(fleet, "send", "coder", "a very long job")
    assert code == 0
    code, result = cli_json(fleet, "cancel", "coder")
    assert (code, result["outcome"]) == (0, "cancelled"), result
    assert result["details"]["latency_ms"] > 0

    def pair() -> tuple[dict[str, Any], dict[str, Any]] | None:
        requested = events(fleet, tenant, "--type", "run.cancel_requested")
        cancelled = [
            e
            for e in events(fleet, tenant, "--type", "run.cancelled")
            if e["source_kind"] == "system"
        ]
        return (requested[0], cancelled[0]) if requested and cancelled else None

    requested, cancelled = wait_for(pair, what="cancel_requested and cancelled stored")
    assert requested["id"] < cancelled["id"]
    assert cancelled["payload"]["latency_ms"] > 0
    assert "cancelled" in screen(tmux_socket, "coder")
    # The run's lifecycle, each transition once.
    lifecycle = wait_for(
        lambda: (
            (r := [e["payload"]["state"] for e in events(fleet, tenant, "--type", "run.state")])
            and "cancelled" in r
            and r
        ),
        what="run.state transitions",
    )
    assert lifecycle == ["start", "cancel_requested", "cancelled"]
    # The cancel names the run it ended.
    runs = {e["run_id"] for e in events(fleet, tenant, "--type", "run.state")}
    assert len(runs) == 1 and None not in runs, runs
    assert requested["run_id"] == cancelled["run_id"] == runs.pop()


def test_watch_streams_then_stops_and_never_resizes(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.5")])

    def size() -> str:
        return subprocess.run(
            [
                "tmux",
                "-L",
                tmux_socket,
                "display",
                "-p",
                "-t",
                "=coder:",
                "#{pane_width}x#{pane_height}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    before = size()

    def start_watcher(name: str) -> subprocess.Popen[bytes]:
        out = (fleet.tmp / name).open("wb")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "fleet"), "watch", "coder", "--json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "FLEET_NATS_URL": fleet.nats.url},
        )
        out.close()
        return proc

    def frames(name: str) -> list[dict[str, Any]]:
        text = (fleet.tmp / name).read_text()
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]

    watchers = [start_watcher("w1.out"), start_watcher("w2.out")]  # several at once
    try:
        for name in ("w1.out", "w2.out"):
            first = wait_for(lambda n=name: frames(n), timeout=20, what=f"first frame {name}")
            assert first[0]["snapshot"] is True and "stub>" in first[0]["screen"]
        subprocess.run(
            ["tmux", "-L", tmux_socket, "send-keys", "-t", "=coder:", "-l", "watch me"], check=True
        )
        subprocess.run(
            ["tmux", "-L", tmux_socket, "send-keys", "-t", "=coder:", "Enter"], check=True
        )
        for name in ("w1.out", "w2.out"):
            wait_for(
                lambda n=name: any("watch me" in f["screen"] for f in frames(n)),
                timeout=15,
                what=f"new output in a later frame of {name}",
            )
    finally:
        for proc in watchers:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)

    async def count_frames(seconds: float) -> int:
        nc = await nats.connect(fleet.nats.url)
        got = 0

        async def cb(_msg: Any) -> None:
            nonlocal got
            got += 1

        await nc.subscribe(subjects.output(tenant, "h1", "coder"), cb=cb)
        await anyio.sleep(seconds)
        await nc.close()
        return got

    # The lease (6 s) runs out without renewals: the stream stops on its own.
    wait_for(
        lambda: anyio.run(count_frames, 3.0) == 0,
        timeout=20,
        interval=0.1,
        what="stream stopped after the watcher left",
    )
    assert size() == before
    assert not any(
        e["payload"].get("verb") == "send" for e in events(fleet, tenant, "--type", "command")
    )
    decode(json.dumps(frames("w1.out")[0]).encode(), WatchFrame)


def test_takeover_lease(fleet: Fleet, tmux_socket: str) -> None:
    up(fleet, tmux_socket, [stub("coder", "0.2")])
    alice, bob = {"FLEET_OPERATOR": "alice"}, {"FLEET_OPERATOR": "bob"}
    # The lease must outlive the three CLI runs made under it (about 1 s each on a loaded
    # 2-core box: a 3 s lease ran out before bob's takeover); expiry is awaited below.
    code, result = cli_json(
        fleet, "takeover", "coder", "--reason", "debugging", "--ttl", "10", env=alice
    )
    assert (code, result["outcome"]) == (0, "ok")
    code, result = cli_json(fleet, "send", "coder", "from alice", env=alice)
    assert (code, result["outcome"]) == (0, "delivered")
    code, result = cli_json(fleet, "send", "coder", "from bob", env=bob)
    assert (code, result["outcome"]) == (1, "lease_held")
    assert "lease held by alice since" in result["message"]
    code, result = cli_json(fleet, "takeover", "coder", "--reason", "mine", env=bob)
    assert result["outcome"] == "lease_held"
    # Expiry frees it without anyone releasing.
    wait_for(
        lambda: cli_json(fleet, "send", "coder", "bob again", env=bob)[1]["outcome"] == "delivered",
        timeout=30,
        interval=0.5,
        what="lease expired",
    )


def test_spawn_stop_and_core_restart(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("core1")], restart_backoff_s=0.5)
    code, result = cli_json(fleet, "spawn", f"{tenant}/h1", "--name", "eph")
    assert (code, result["outcome"]) == (0, "ok"), result
    rows = wait_for(
        lambda: (r := rows_by_session(fleet.ps("--tenant", tenant))).get("eph") and r,
        what="ephemeral worker listed",
    )
    assert rows["eph"]["session"]["kind"] == "ephemeral", rows["eph"]
    code, result = cli_json(fleet, "stop", "eph")
    assert (code, result["outcome"]) == (0, "ok")
    # A session someone opened by hand on the socket is listed, never stopped by us.
    subprocess.run(
        ["tmux", "-L", tmux_socket, "new-session", "-d", "-s", "theirs", "sleep 600"], check=True
    )
    wait_for(
        lambda: "theirs" in rows_by_session(fleet.ps("--tenant", tenant)), what="theirs listed"
    )
    code, result = cli_json(fleet, "stop", f"{tenant}/h1/theirs")
    assert (code, result["outcome"]) == (1, "bad_request"), result
    assert "not in the roster" in result["message"]
    alive = subprocess.run(["tmux", "-L", tmux_socket, "has-session", "-t", "=theirs"])
    assert alive.returncode == 0
    wait_for(
        lambda: "eph" not in rows_by_session(fleet.ps("--tenant", tenant)),
        what="ephemeral worker gone",
    )
    # An ephemeral worker whose run ends is cleaned up, and never restarted.
    spawned = fleet.cli("spawn", f"{tenant}/h1", "--name", "batch", "--", "true")
    assert spawned.returncode == 0, spawned.stderr
    wait_for(
        lambda: (
            subprocess.run(
                ["tmux", "-L", tmux_socket, "has-session", "-t", "=batch"],
                capture_output=True,
                check=False,
            ).returncode
            != 0
        ),
        timeout=15,
        what="batch session cleaned up",
    )

    pid = rows["core1"]["session"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        row = rows_by_session(fleet.ps("--tenant", tenant)).get("core1")
        ok = row and row["session"]["restarts"] == 1 and row["session"]["pane"] == "alive"
        return row if ok else None

    row = wait_for(restarted, timeout=20, what="core session restarted once")
    assert row["session"]["pid"] != pid


def test_explain_names_the_rule_and_line(fleet: Fleet, tmux_socket: str) -> None:
    up(fleet, tmux_socket, [stub("coder")])
    code, result = cli_json(fleet, "explain", "coder")
    assert code == 0
    assert result["details"]["state"] == "idle"
    assert result["details"]["line"].startswith("stub>")
    assert result["details"]["rule"] and result["details"]["line_no"] > 0
