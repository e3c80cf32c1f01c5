"""Events end to end: what a stub prints is stored once, searchable, and survives crashes of
the controller, the host agent and the NATS server."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, SessionSpec
from controller.natsserver.embedded import EmbeddedNats
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END
from tests.support.fleet import Fleet, wait_for

EVENTS_PER_RUN = 4  # run.started, tool_call, tool_result, run.completed


def tenant_id() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def stub(name: str, work: str = "0.2") -> SessionSpec:
    return SessionSpec(
        name=name, runtime="stub", env={"FLEET_STUB_WORK_SECONDS": work, "FLEET_STUB_STEPS": "2"}
    )


def send_prompts(socket: str, session: str, prompts: list[str]) -> None:
    for text in prompts:
        subprocess.run(
            ["tmux", "-L", socket, "send-keys", "-t", f"={session}:", "-l", text], check=True
        )
        subprocess.run(
            ["tmux", "-L", socket, "send-keys", "-t", f"={session}:", "Enter"], check=True
        )


def emitted_keys(config: AgentConfig, session: str) -> list[str]:
    return emitted(config, session)[0]


def emitted(config: AgentConfig, session: str) -> tuple[list[str], int]:
    """Ground truth, read independently of our parser: the blocks in the pane's raw log, as
    the keys of the valid ones and the count of the malformed ones."""
    raw = (config.state_path / "logs" / f"{session}.log").read_bytes().decode(errors="replace")
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", ln).strip() for ln in raw.splitlines()]
    keys: list[str] = []
    malformed = 0
    body: list[str] | None = None
    for line in lines:
        if line == DEFAULT_BEGIN:
            body = []
        elif line == DEFAULT_END and body is not None:
            try:
                keys.append(json.loads("".join(body))["idempotency_key"])
            except json.JSONDecodeError:
                malformed += 1  # the stub's deliberately broken blocks
            body = None
        elif body is not None:
            body.append(line)
    return keys, malformed


def stored(fleet: Fleet, tenant: str, session: str) -> list[dict[str, Any]]:
    result = fleet.cli(
        "events", "search", "--tenant", tenant, "--session", session, "--limit", "500", "--json"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return sorted((r for r in rows if r["source_kind"] == "agent"), key=lambda r: r["id"])


def all_stored(
    fleet: Fleet, tenant: str, config: AgentConfig, session: str, runs: int
) -> list[dict[str, Any]]:
    """Wait until every emitted event of ``runs`` runs is stored; return the stored rows."""

    def done() -> list[dict[str, Any]] | None:
        keys = emitted_keys(config, session)
        try:
            rows = stored(fleet, tenant, session)
        except AssertionError:  # the controller is still reconnecting (NATS restart)
            return None
        if len(keys) >= runs * EVENTS_PER_RUN and len(rows) >= len(keys):
            return rows
        return None

    return wait_for(done, timeout=60, interval=0.5, what=f"{runs} runs of {session} stored")


def assert_exactly_once_in_order(rows: list[dict[str, Any]], keys: list[str]) -> None:
    assert Counter(r["idempotency_key"] for r in rows) == Counter(keys)
    assert len({(r["boot_id"], r["seq"]) for r in rows}) == len(rows)
    # In order per session: stored in the order the agent printed them.
    assert [r["idempotency_key"] for r in rows] == keys


def test_emitted_events_are_searchable(fleet: Fleet, tmux_socket: str) -> None:
    tenant = tenant_id()
    config = fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder")])
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(config)
    wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture on")
    send_prompts(tmux_socket, "coder", ["polish the zeppelin"])

    def found_run() -> list[dict[str, Any]] | None:
        result = fleet.cli("events", "search", "zeppelin", "--tenant", tenant, "--json")
        events = [json.loads(line) for line in result.stdout.splitlines()]
        types = {e["event_type"] for e in events}
        return events if {"run.started", "run.completed"} <= types else None

    found = wait_for(found_run, timeout=20, what="search finds the whole run")
    completed = next(e for e in found if e["event_type"] == "run.completed")
    assert completed["source_kind"] == "agent"
    assert completed["confidence"] == pytest.approx(0.9)
    assert completed["artifact_refs"] and completed["run_id"]
    # The table output and `show` with links both ways.
    tool_result = stored(fleet, tenant, "coder")
    result_row = next(r for r in tool_result if r["event_type"] == "tool_result")
    show = json.loads(fleet.cli("events", "show", str(result_row["id"]), "--json").stdout)
    assert [link["type"] for link in show["outgoing"]] == ["caused_by"]
    call_id = show["outgoing"][0]["to_event"]
    back = json.loads(fleet.cli("events", "show", str(call_id), "--json").stdout)
    assert [link["from_event"] for link in back["incoming"]] == [result_row["id"]]
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert status["counters"]["sequence_gaps"] == 0


def test_events_tail_follow_prints_new_events_as_json_lines(fleet: Fleet, tmux_socket: str) -> None:
    """`fleet events tail -f --json`: the first page, then each event stored later, one JSON
    object per line."""
    import os
    import threading

    from tests.support.fleet import BIN

    tenant = tenant_id()
    config = fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder")])
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(config)
    wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture on")
    tail = subprocess.Popen(
        [str(BIN / "fleet"), "events", "tail", "-f", "--json", "--tenant", tenant],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "FLEET_NATS_URL": fleet.nats.url},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(tail.stdout or []), daemon=True)
    reader.start()
    try:
        send_prompts(tmux_socket, "coder", ["follow the kestrel"])

        def completed() -> dict[str, Any] | None:
            events = [json.loads(line) for line in list(lines)]
            return next((e for e in events if e["event_type"] == "run.completed"), None)

        event = wait_for(completed, timeout=30, what="tail -f prints run.completed")
        assert event["tenant"] == tenant and event["session"] == "coder"
    finally:
        tail.terminate()
        tail.wait(timeout=10)
        reader.join(timeout=10)  # the pipe ends with the process
        if tail.stdout is not None:
            tail.stdout.close()


def test_controller_kill9_while_streaming_stores_everything_once(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant = tenant_id()
    config = fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder", "0.1")])
    controller = fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(config)
    wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture on")
    runs = 12
    send_prompts(tmux_socket, "coder", [f"task {i}" for i in range(runs)])
    wait_for(lambda: len(stored(fleet, tenant, "coder")) >= 4, what="some events stored")
    controller.kill()
    fleet.start_controller(fleet.controller_config([tenant]))
    rows = all_stored(fleet, tenant, config, "coder", runs)
    assert_exactly_once_in_order(rows, emitted_keys(config, "coder"))


def test_host_agent_kill9_and_restart_loses_and_repeats_nothing(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant = tenant_id()
    noisy = SessionSpec(
        name="noisy",
        runtime="stub",
        env={
            "FLEET_STUB_WORK_SECONDS": "0.1",
            "FLEET_STUB_STEPS": "2",
            "FLEET_STUB_EMIT": "malformed",
        },
    )
    # 0.3 s per step: 12 runs outlast the CLI polls (about 1 s each on a loaded 2-core box)
    # that see the first events stored, so the kill lands mid-stream (asserted below).
    config = fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder", "0.3"), noisy])
    fleet.start_controller(fleet.controller_config([tenant]))
    agent = fleet.start_agent(config)
    for name in ("coder", "noisy"):
        wait_for(
            lambda n=name: (config.state_path / "logs" / f"{n}.log").exists(), what="capture on"
        )
    runs = 12
    send_prompts(tmux_socket, "coder", [f"task {i}" for i in range(runs)])
    send_prompts(tmux_socket, "noisy", [f"task {i}" for i in range(runs)])
    wait_for(lambda: len(stored(fleet, tenant, "coder")) >= 4, what="some events stored")
    agent.kill()  # the stubs keep printing into the pane logs meanwhile
    assert len(emitted_keys(config, "coder")) < runs * EVENTS_PER_RUN, "killed after the runs"
    wait_for(
        lambda: (
            len(emitted_keys(config, "coder")) >= runs * EVENTS_PER_RUN
            and emitted(config, "noisy")[1] >= runs
        ),
        timeout=45,  # the stubs' own 12 runs (~8 s of work each), slower on a loaded box
        what="the stubs finished their runs",
    )
    fleet.start_agent(config)
    rows = all_stored(fleet, tenant, config, "coder", runs)
    assert_exactly_once_in_order(rows, emitted_keys(config, "coder"))
    assert len({r["boot_id"] for r in rows}) == 2  # numbered by two agent lifetimes

    # Malformed blocks carry no idempotency key: only the persisted offsets keep a restarted
    # agent from parsing them (and reporting them) a second time.
    def validation_errors() -> list[dict[str, Any]] | None:
        result = fleet.cli(
            "events",
            "search",
            "--tenant",
            tenant,
            "--session",
            "noisy",
            "--type",
            "validation_error",
            "--limit",
            "500",
            "--json",
        )
        found = [json.loads(line) for line in result.stdout.splitlines()]
        return found if len(found) >= runs else None

    errors = wait_for(validation_errors, timeout=30, what="one validation_error per run")
    assert emitted(config, "noisy")[1] == runs
    assert len(validation_errors() or []) == runs
    assert {e["payload"]["reason"] for e in errors} == {"invalid_json"}
    assert all(e["source_kind"] == "system" for e in errors)


def test_nats_restart_on_its_store_dir_loses_nothing(tmp_path: Path, tmux_socket: str) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    fleet = Fleet(server, tmp_path)
    try:
        tenant = tenant_id()
        config = fleet.agent_config(tenant, "h1", tmux_socket, [stub("a", "0.1"), stub("b", "0.1")])
        fleet.start_controller(fleet.controller_config([tenant]))
        fleet.start_agent(config)
        for name in ("a", "b"):
            wait_for(lambda n=name: (config.state_path / "logs" / f"{n}.log").exists())
        send_prompts(tmux_socket, "a", [f"first {i}" for i in range(3)])
        wait_for(lambda: len(stored(fleet, tenant, "a")) >= 3 * EVENTS_PER_RUN, what="first runs")

        server.stop()  # graceful: JetStream flushes its store dir
        send_prompts(tmux_socket, "a", [f"during {i}" for i in range(4)])
        send_prompts(tmux_socket, "b", [f"during {i}" for i in range(4)])
        # Emitted while the server is away: they can only be in the outbox.
        wait_for(
            lambda: (
                len(emitted_keys(config, "a")) >= 7 * EVENTS_PER_RUN
                and len(emitted_keys(config, "b")) >= 4 * EVENTS_PER_RUN
            ),
            what="stubs emitted during the outage",
        )
        server.start()  # same port, same store dir
        rows_a = all_stored(fleet, tenant, config, "a", 7)
        rows_b = all_stored(fleet, tenant, config, "b", 4)
        assert_exactly_once_in_order(rows_a, emitted_keys(config, "a"))
        assert_exactly_once_in_order(rows_b, emitted_keys(config, "b"))
    finally:
        fleet.stop_all()
        server.stop()


def test_store_rebuild_from_the_stream_gives_the_same_rows(fleet: Fleet, tmux_socket: str) -> None:
    tenant = tenant_id()
    config = fleet.agent_config(tenant, "h1", tmux_socket, [stub("coder", "0.1")])
    fleet.start_controller(fleet.controller_config([tenant]))
    fleet.start_agent(config)
    wait_for(lambda: (config.state_path / "logs" / "coder.log").exists(), what="capture on")
    send_prompts(tmux_socket, "coder", ["one", "two"])
    before = all_stored(fleet, tenant, config, "coder", 2)
    result = fleet.cli("store", "rebuild", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"] >= len(before)
    after = stored(fleet, tenant, "coder")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "id"} for r in rows]  # noqa: E731
    assert strip(after) == strip(before)
