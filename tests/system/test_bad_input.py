"""Configs and inputs that refuse nonsense (issue 15): each bad config or CLI input is one line
on stderr, exit 2, no traceback; each out-of-range API input is answered `bad_request`; what a
host or an agent wrote reaches the terminal without control characters."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import nats
import pytest
from rich.console import Console

from agent.config import AgentConfig, ConfigError, SessionSpec, validate
from controller.cli.events import event_line
from controller.cli.render import ps_table, safe
from controller.config import dump
from protocol import decode
from protocol.api import PS, ApiError, ErrorCode, HostState, PsRow
from protocol.commands import CommandResult
from protocol.events import Severity, SourceKind
from protocol.events_api import StoredEvent
from protocol.heartbeat import SessionSnapshot
from tests.support.fleet import Fleet

BIN = Path(sys.executable).parent

AGENT_CONFIGS = {
    "poll_intervl_s = 1": "did you mean 'poll_interval_s'?",
    '[[sessions]]\nname = "coder"\nrutnime = "claude"': (
        "'sessions[0].rutnime' (did you mean 'runtime'?)"
    ),
    '[nats]\nserverz = ["nats://x:4222"]': "'nats.serverz' (did you mean 'servers'?)",
    "poll_interval_s = 0": "poll_interval_s must be between 0.05 and 3600, not 0",
    "poll_interval_s = -1": "poll_interval_s must be between",
    "restart_backoff_s = 0": "restart_backoff_s must be between",
    "outbox_max_events = -3": "outbox_max_events must be between",
    'runtimes_dir = "/nonexistent/specs"': "runtimes directory does not exist",
    '[[sessions]]\nname = "coder"\nruntime = "claud"': (
        "unknown runtime 'claud' (did you mean 'claude'? known: claude, codex, pi, shell, stub)"
    ),
    "heartbeat_interval_s = nan": "heartbeat_interval_s must be between",
    '[[sessions]]\nname = "coder"\nruntime = "nosuch"': "unknown runtime 'nosuch' (known: ",
}


def controller_configs(tmp: Path) -> dict[str, str]:
    (tmp / "a-file").write_text("")
    return {
        "liveness_tick = 1": "'liveness_tick' (did you mean 'liveness_tick_s'?)",
        "[streams]\nreplicaz = 3": "'streams.replicaz' (did you mean 'replicas'?)",
        "liveness_tick_s = 0": "liveness_tick_s must be between 0.05 and 60, not 0",
        "liveness_tick_s = -1": "liveness_tick_s must be between",
        "persist_interval_s = 0": "persist_interval_s must be between",
        'metrics_addr = "x"': "metrics_addr must be HOST:PORT",
        'metrics_addr = "127.0.0.1:99999"': "metrics_addr must be HOST:PORT",
        f'data_dir = "{tmp / "a-file"}"': "is not a directory",
    }


def one_line_exit_2(result: subprocess.CompletedProcess[str], expect: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expect in lines[0], lines[0]


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("body", list(AGENT_CONFIGS), ids=range(len(AGENT_CONFIGS)))
def test_bad_agent_config_is_one_line(tmp_path: Path, body: str) -> None:
    path = tmp_path / "agent.toml"
    head, _, rest = body.partition("[")  # top-level keys must come before any table
    path.write_text(f'tenant = "acme"\n{head}\n' + (f"[{rest}\n" if rest else ""))
    one_line_exit_2(
        run(str(BIN / "fleet-agent"), "run", "--config", str(path)), AGENT_CONFIGS[body]
    )


def test_bad_controller_config_is_one_line(tmp_path: Path) -> None:
    for body, expect in controller_configs(tmp_path).items():
        path = tmp_path / "controller.toml"
        path.write_text(f'tenants = ["acme"]\n{body}\n')
        result = run(str(BIN / "fleet"), "controller", "run", "--config", str(path))
        one_line_exit_2(result, expect)
        assert str(path) in result.stderr  # names the file


def test_metrics_port_in_use_is_one_line(fleet: Fleet) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for addr, expect in ((f"127.0.0.1:{port}", "in use"), ("x", "HOST:PORT")):
            config = fleet.controller_config(["acme"], metrics_addr=addr)
            path = fleet.tmp / "controller.toml"
            path.write_text(dump(config).replace(f'metrics_addr = "{addr}"\n', ""))
            result = run(
                str(BIN / "fleet"),
                "controller",
                "run",
                "--config",
                str(path),
                "--metrics-addr",
                addr,
            )
            one_line_exit_2(result, expect)


def test_bad_cli_input_is_one_line(tmp_path: Path) -> None:
    env = {"FLEET_NATS_URL": ""}
    one_line_exit_2(
        run(str(BIN / "fleet"), "ps", env={**env, "FLEET_CONTEXT": str(tmp_path / "nope")}),
        "does not exist",
    )
    for since in ("1e400", "-1e400", "nan", "yesterday-ish"):
        result = run(str(BIN / "fleet"), "events", "search", "--since", since, env=env)
        one_line_exit_2(result, "is not a time")


def test_out_of_range_api_inputs_are_bad_request(fleet: Fleet) -> None:
    fleet.start_controller(fleet.controller_config(["acme"]))
    cmd = '{"msg":"cmd.request","target":"acme/h1/s","issued_by":"t","body":%s}'
    requests = {
        PS.subject: ['{"msg":"ps.request","cursor":-5}', '{"msg":"ps.request","limit":0}'],
        "fleet.ctl.events.show": [f'{{"msg":"events.show.request","id":{2**63}}}'],
        "fleet.ctl.events.tail": [f'{{"msg":"events.tail.request","after_id":{2**64}}}'],
        "fleet.ctl.events.link": [
            '{"msg":"events.link.request","from_id":-1,"to_id":1,"type":"resolves"}'
        ],
        "fleet.ctl.events.search": ['{"msg":"events.search.request","since":1e300}'],
        "fleet.ctl.cmd": [
            cmd % '{"verb":"spawn","session":"s","ttl_s":-5}',
            cmd % ('{"verb":"takeover","session":"s","reason":"%s"}' % ("x" * 100_000)),
            cmd % '{"verb":"watch","session":"s","watcher":"w","ttl_s":1e9}',
            cmd % '{"verb":"send","session":"s","text":"x","timeout_s":0}',
        ],
    }

    async def main() -> list[tuple[str, object]]:
        nc = await nats.connect(fleet.nats.url)
        try:
            out: list[tuple[str, object]] = []
            for subject, bodies in requests.items():
                for body in bodies:
                    msg = await nc.request(subject, body.encode(), timeout=10)
                    out.append((body[:80], decode(msg.data, ApiError | CommandResult)))
            return out
        finally:
            await nc.close()

    for body, reply in anyio.run(main):
        assert isinstance(reply, ApiError) and reply.code is ErrorCode.BAD_REQUEST, (body, reply)
    # The CLI says so in one line (exit 1: the controller answered, and the answer is no).
    result = fleet.cli("events", "show", str(2**63))
    assert result.returncode == 1 and "bad_request" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_untrusted_text_is_printed_without_control_characters() -> None:
    summary = "done\x1b]0;pwned\x07\x1b[2J\nfake line\r\u202eevil\x9b"
    shown = safe(summary)
    assert all(c.isprintable() for c in shown), shown
    assert shown == "done\\x1b]0;pwned\\x07\\x1b[2J\\nfake line\\r\\u202eevil\\x9b"
    assert safe("plain é ✓ text") == "plain é ✓ text"


def test_a_session_with_its_own_command_may_name_a_runtime_without_rules() -> None:
    # `fleet init` adopts `sleep 600` as runtime `sleep`: no rules, state unknown. Without a
    # command the name would be run as one, and a near miss of a known runtime is a typo.
    adopted = SessionSpec(name="sleeper", runtime="sleep", command="sleep 600")
    assert validate(AgentConfig(tenant="acme", host="h1", sessions=[adopted]))
    for runtime, command in (("sleep", None), ("claud", "claude")):
        spec = SessionSpec(name="s", runtime=runtime, command=command)
        with pytest.raises(ConfigError, match="unknown runtime"):
            validate(AgentConfig(tenant="acme", host="h1", sessions=[spec]))


def test_ps_and_events_output_carry_no_terminal_escapes() -> None:
    hostile = "claude\x1b[2J\x1b]0;owned\x07[red]markup[/red]"
    snap = SessionSnapshot(name="coder", runtime_configured=hostile, runtime_observed=None)
    row = PsRow(
        tenant="acme", host="h1", host_state=HostState.OK, heartbeat_age_s=1.0, session=snap
    )
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(ps_table([row]))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b" not in shown and "\x07" not in shown
    assert "claude\\x1b[2J" in shown and "[red]markup[/red]" in shown  # no markup either
    event = StoredEvent(
        id=1,
        tenant="acme",
        host="h1",
        session="coder",
        boot_id="b1",
        seq=1,
        ts=1e300,  # a hostile clock: printed, not a crash
        received_at=0.0,
        event_type="lease.acquired",
        summary="coder: acquired by alice\x1b[8m\nfleet: all good",
        tags=[],
        payload={},
        severity=Severity.INFO,
        confidence=None,
        provenance=None,
        source_kind=SourceKind.OPERATOR,
        idempotency_key="k",
        dedupe_key=None,
        attention_candidate=False,
        operator_action_required=False,
        risk_detected=False,
        artifact_refs=[],
        run_id=None,
    )
    line = event_line(event)
    assert "\n" not in line and "\x1b" not in line and "alice\\x1b[8m\\nfleet" in line
