"""Takeover leases that hold: every verb that changes a session checks them, they survive a
kill -9 of the host agent, an expiry during the downtime is reported once, and out-of-range
lease requests are refused instead of turning into validation_errors.

Real NATS, real tmux, stub sessions. The CLI's identity is `$FLEET_OPERATOR` here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats

from protocol import decode, encode, subjects
from protocol.commands import MAX_REASON_CHARS, Command, CommandResult, Outcome, Watch
from tests.support.fleet import Fleet, wait_for
from tests.system.test_steering import cli_json, events, stub, up

ALICE, BOB = {"FLEET_OPERATOR": "alice"}, {"FLEET_OPERATOR": "bob"}


def has_session(socket: str, name: str) -> bool:
    probe = ["tmux", "-L", socket, "has-session", "-t", f"={name}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def audits(fleet: Fleet, tenant: str, verb: str, outcome: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events(fleet, tenant, "--type", "command")
        if e["payload"]["verb"] == verb and e["payload"]["outcome"] == outcome
    ]


def refused_by_alice(code: int, result: dict[str, Any]) -> bool:
    return (code, result["outcome"]) == (1, "lease_held") and (
        "lease held by alice since" in result["message"]
    )


def test_every_steering_verb_refused_under_someone_elses_lease(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    code, result = cli_json(
        fleet, "takeover", "coder", "--reason", "debug", "--ttl", "600", env=ALICE
    )
    assert (code, result["outcome"]) == (0, "ok"), result

    for argv in (["stop", "coder"], ["send", "coder", "hi"], ["cancel", "coder"]):
        code, result = cli_json(fleet, *argv, env=BOB)
        assert refused_by_alice(code, result), (argv, result)
    code, result = cli_json(fleet, "answer", "coder", "1", env=BOB)
    assert refused_by_alice(code, result), result
    assert has_session(tmux_socket, "coder"), "bob's stop must not have stopped it"

    # The holder may stop it; the name stays hers: bob cannot spawn a session in its place.
    code, result = cli_json(fleet, "stop", "coder", env=ALICE)
    assert (code, result["outcome"]) == (0, "ok"), result
    wait_for(lambda: not has_session(tmux_socket, "coder"), what="coder stopped")
    code, result = cli_json(fleet, "spawn", f"{tenant}/h1", "--name", "coder", env=BOB)
    assert refused_by_alice(code, result), result
    assert not has_session(tmux_socket, "coder")

    # Each refusal is audited, naming who asked and who holds the lease.
    def refusals() -> dict[str, dict[str, Any]] | None:
        held = [
            e
            for e in events(fleet, tenant, "--type", "command")
            if e["payload"]["outcome"] == "lease_held"
        ]
        return {e["payload"]["verb"]: e for e in held} if len(held) == 5 else None

    refused = wait_for(refusals, what="five refusals audited")
    assert set(refused) == {"stop", "send", "cancel", "answer", "spawn"}
    for event in refused.values():
        assert event["payload"]["issued_by"] == "bob"
        assert event["payload"]["details"]["holder"] == "alice"


def test_lease_survives_agent_kill_and_restart(fleet: Fleet, tmux_socket: str) -> None:
    tenant, config, agent = up(fleet, tmux_socket, [stub("coder", "0.2")])
    code, result = cli_json(
        fleet, "takeover", "coder", "--reason", "mine", "--ttl", "600", env=ALICE
    )
    assert (code, result["outcome"]) == (0, "ok"), result
    agent.kill()  # SIGKILL: nothing is flushed or handed over
    restarted = fleet.start_agent(config)  # same state dir, a new process and boot
    # Read-only and lease-free: answered ok once the new agent serves commands.
    wait_for(
        lambda: cli_json(fleet, "explain", "coder")[1]["outcome"] == "ok",
        timeout=30,
        interval=0.5,
        what="restarted agent answering",
    )
    assert restarted.popen is not None and restarted.popen.poll() is None

    code, result = cli_json(fleet, "stop", "coder", env=BOB)
    assert refused_by_alice(code, result), result
    code, result = cli_json(fleet, "send", "coder", "from bob", env=BOB)
    assert refused_by_alice(code, result), result
    code, result = cli_json(fleet, "takeover", "coder", "--reason", "me", env=BOB)
    assert refused_by_alice(code, result), result
    code, result = cli_json(fleet, "send", "coder", "from alice", env=ALICE)
    assert (code, result["outcome"]) == (0, "delivered"), result
    assert has_session(tmux_socket, "coder")

    # Her release after the restart ends the lease she took before it, and nothing expired.
    code, result = cli_json(fleet, "release", "coder", env=ALICE)
    assert (code, result["outcome"]) == (0, "ok"), result
    released = wait_for(
        lambda: events(fleet, tenant, "--type", "lease.released"), what="release stored"
    )
    acquired = events(fleet, tenant, "--type", "lease.acquired")
    assert len(acquired) == 1 and len(released) == 1
    assert acquired[0]["boot_id"] != released[0]["boot_id"]  # two agent lifetimes
    assert released[0]["payload"]["since"] == acquired[0]["payload"]["since"]
    assert events(fleet, tenant, "--type", "lease.expired") == []


def test_lease_expired_while_the_agent_was_down_is_reported_once(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant, config, agent = up(fleet, tmux_socket, [stub("coder", "0.2")])
    code, result = cli_json(
        fleet, "takeover", "coder", "--reason", "short", "--ttl", "8", env=ALICE
    )
    assert (code, result["outcome"]) == (0, "ok"), result
    agent.kill()  # well before the 8 s run out; the boot ids below prove it
    expires_at = result["details"]["expires_at"]
    wait_for(lambda: time.time() > expires_at, timeout=10, what="the lease's end")
    fleet.start_agent(config)

    expired = wait_for(
        lambda: events(fleet, tenant, "--type", "lease.expired"), timeout=30, what="expiry stored"
    )
    # Free again: bob takes and gives back the lease. The outbox sends in order, so once his
    # release is stored every earlier event of the restarted agent is stored too.
    code, result = cli_json(fleet, "takeover", "coder", "--reason", "after", env=BOB)
    assert (code, result["outcome"]) == (0, "ok"), result
    code, result = cli_json(fleet, "release", "coder", env=BOB)
    assert (code, result["outcome"]) == (0, "ok"), result
    wait_for(
        lambda: any(
            e["payload"]["holder"] == "bob"
            for e in events(fleet, tenant, "--type", "lease.released")
        ),
        what="bob's release stored",
    )
    expired = events(fleet, tenant, "--type", "lease.expired")
    acquired = [
        e
        for e in events(fleet, tenant, "--type", "lease.acquired")
        if e["payload"]["holder"] == "alice"
    ]
    assert len(expired) == 1, expired
    assert expired[0]["payload"]["holder"] == "alice"
    assert expired[0]["payload"]["expires_at"] == expires_at
    assert expired[0]["boot_id"] != acquired[0]["boot_id"]  # reported by the restarted agent


def refused(fleet: Fleet, *args: str, env: dict[str, str]) -> str:
    """A request the controller cannot decode: one line on stderr, exit 1, no traceback."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "fleet"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "FLEET_NATS_URL": fleet.nats.url, **env},
    )
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_out_of_range_lease_requests_are_bad_request(fleet: Fleet, tmux_socket: str) -> None:
    tenant, _, _ = up(fleet, tmux_socket, [stub("coder", "0.2")])
    huge = "x" * 100_000  # made the lease's audit events validation_errors: audit lost
    line = refused(fleet, "takeover", "coder", "--reason", huge, env=ALICE)
    assert "bad_request" in line and "reason" in line and "xxxx" not in line
    for ttl in ("1e9", "0", "-5"):
        line = refused(fleet, "takeover", "coder", "--reason", "r", "--ttl", ttl, env=ALICE)
        assert "bad_request" in line and "ttl_s" in line, line

    async def watch(ttl_s: float) -> CommandResult:
        """Straight to the host agent, past the controller: the agent refuses it too."""
        now = time.time()
        cmd = Command(
            command_id=uuid.uuid4().hex,
            tenant=tenant,
            host="h1",
            issued_by="test",
            issued_at=now,
            deadline=now + 20,
            body=Watch(session="coder", watcher="w1", ttl_s=ttl_s),
        )
        nc = await nats.connect(fleet.nats.url)
        try:
            msg = await nc.request(subjects.command(tenant, "h1"), encode(cmd), timeout=20)
            return decode(msg.data, CommandResult)
        finally:
            await nc.close()

    assert anyio.run(watch, 1e9).outcome is Outcome.BAD_REQUEST  # once streamed forever
    assert anyio.run(watch, 6.0).outcome is Outcome.OK

    # Nobody holds it; the longest reason allowed is stored whole, as what it is.
    longest = "y" * MAX_REASON_CHARS
    code, result = cli_json(fleet, "takeover", "coder", "--reason", longest, env=BOB)
    assert (code, result["outcome"]) == (0, "ok"), result
    acquired = wait_for(
        lambda: events(fleet, tenant, "--type", "lease.acquired"), what="the lease stored"
    )
    assert [(e["payload"]["holder"], e["payload"]["reason"]) for e in acquired] == [
        ("bob", longest)
    ]
    # Its audit event follows the lease event; none came before it from the refused ones.
    wait_for(lambda: audits(fleet, tenant, "takeover", "ok"), what="the takeover audited")
    audited = [e["payload"]["verb"] for e in events(fleet, tenant, "--type", "command")]
    assert audited.count("takeover") == 1
    assert events(fleet, tenant, "--type", "validation_error") == []
