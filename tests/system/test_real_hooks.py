"""The runtimes' own signals, from the real CLIs: Claude Code hooks, Codex notify, pi extension.

Each CLI is launched with the agent's hook wiring (agent/hooks/wiring.py) in a real tmux pane
against the fake model; a prompt must produce the runtime's payloads in the spool
(agent/hooks/send.py or the pi extension), read by the agent's inbox and translated into
`run.started` / `run.completed` (agent/hooks/translate.py). The user's own hooks (Claude
settings, Codex notify) must still run: ours are merged, never replacing theirs.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.config import SessionSpec
from agent.discovery.tmux import TMUX_CONF
from agent.discovery.tmux import Tmux as AgentTmux
from agent.events.origin import Origin
from agent.events.runs import RunTracker
from agent.hooks.inbox import HookInbox, HookSignal
from agent.hooks.receiver import HookReceiver, hook_events
from agent.hooks.translate import meaning, to_event
from agent.hooks.wiring import hook_launch_args, spool_dir, wire
from controller.natsserver.embedded import EmbeddedNats
from protocol.heartbeat import SessionState
from tests.support import realcli, runtime_home
from tests.support.fake_model import FakeModel, Script, text, tool_call
from tests.support.fleet import Fleet, wait_for

pytestmark = pytest.mark.timeout(90)

START_S = 30.0


@pytest.fixture
def touch_file(tmp_path: Path) -> Path:
    return tmp_path / "touched-by-tool"


@pytest.fixture
def model(touch_file: Path) -> Iterator[FakeModel]:
    script = (
        Script()
        .on("ping-7f3a", text("pong-7f3a answered"))
        .on("tool-0b7c", tool_call(f"touch {touch_file}"))
    )
    with FakeModel(script) as m:
        yield m


@pytest.fixture
def tmux() -> Iterator[realcli.Tmux]:
    with realcli.Tmux("hooks") as t:
        yield t


class Hooked:
    """One runtime in a pane with the agent's hook wiring, and the agent's inbox for it."""

    def __init__(self, runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path) -> None:
        binary = realcli.require_cli(runtime)
        root, self.state = tmp_path / runtime, tmp_path / "state"
        self.launch = runtime_home.seed(
            runtime, root, root / "project", model.url, binary=str(binary)
        )
        self.runtime = runtime
        self.tmux = tmux
        self.signals: list[HookSignal] = []
        spool_dir(self.state).mkdir(parents=True, exist_ok=True)
        self.inbox = HookInbox(spool_dir(self.state))

    def start(self) -> realcli.Pane:
        wiring = hook_launch_args(self.runtime, self.runtime, self.state, env=self.launch.env)
        wiring.write_files()
        env = realcli.node_path_env(
            {**self.launch.env, **wiring.env, "FLEET_SESSION": self.runtime}
        )
        argv = [*self.launch.argv, *wiring.argv]
        pane = self.tmux.start(self.runtime, argv, env, self.launch.cwd)
        pane.wait_for(realcli.SIGNS[self.runtime].is_idle, START_S, what=f"{self.runtime} idle")
        return pane

    def wait_events(self, *names: str, timeout: float = 20.0) -> list[HookSignal]:
        """Drain the inbox until every hook event in `names` arrived; all signals so far."""
        deadline = time.monotonic() + timeout
        while True:
            self.signals += self.inbox.drain()
            seen = {s.event for s in self.signals}
            if all(n in seen for n in names):
                return self.signals
            if time.monotonic() > deadline:
                raise AssertionError(f"hook events {names} not all seen; got {sorted(seen)}")
            time.sleep(0.1)


def translated(signals: list[HookSignal]) -> list[str]:
    out = []
    for sig in signals:
        event = to_event(sig, meaning(sig), tenant="t1", host="h1", boot_id="b1", run_id=None)
        if event is not None:
            out.append(event.event_type)
    return out


def first(signals: list[HookSignal], name: str) -> HookSignal:
    return next(s for s in signals if s.event == name)


def test_claude_hooks_reach_the_inbox_and_keep_the_users_own(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    h = Hooked("claude", tmux, model, tmp_path)
    # The user's own settings: one hook of theirs, which must still run next to ours.
    theirs = tmp_path / "user-hook-ran"
    settings = h.launch.config_dir / "settings.json"
    user = json.loads(settings.read_text())
    user["hooks"] = {
        "UserPromptSubmit": [{"hooks": [{"type": "command", "command": f"touch {theirs}"}]}]
    }
    settings.write_text(json.dumps(user))
    pane = h.start()
    realcli.submit(pane, "please ping-7f3a now")
    model.wait_for_prompt("ping-7f3a", 15)
    signals = h.wait_events("UserPromptSubmit", "Stop")
    assert first(signals, "UserPromptSubmit").seq < first(signals, "Stop").seq
    assert "ping-7f3a" in first(signals, "UserPromptSubmit").payload["prompt"]
    kinds = translated(signals)
    assert kinds.index("run.started") < kinds.index("run.completed")
    started = first(signals, "UserPromptSubmit")
    run_id = meaning(started).run_id
    assert run_id and meaning(first(signals, "Stop")).run_id == run_id
    assert theirs.exists(), "the user's own UserPromptSubmit hook did not run"
    assert meaning(first(signals, "Stop")).state is SessionState.IDLE


def test_claude_permission_prompt_is_blocked_with_action_required(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path, touch_file: Path
) -> None:
    h = Hooked("claude", tmux, model, tmp_path)
    pane = h.start()
    realcli.submit(pane, "please tool-0b7c now")
    signals = h.wait_events("PreToolUse", "Notification", timeout=30)
    note = first(signals, "Notification")
    assert note.payload.get("notification_type") == "permission_prompt", note.payload
    m = meaning(note)
    assert m.state is SessionState.BLOCKED and m.action_required
    assert "tool_call" in translated(signals)
    assert not touch_file.exists()  # nothing ran: the dialog waits for an answer
    pane.send_keys("Escape")


def test_codex_notify_reaches_the_inbox_and_chains_the_users_own(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    h = Hooked("codex", tmux, model, tmp_path)
    theirs = tmp_path / "user-notify-ran"
    config = h.launch.config_dir / "config.toml"
    # Top-level keys go before the first table.
    config.write_text(
        f"notify = {json.dumps(['/bin/sh', '-c', f'touch {theirs}'])}\n" + config.read_text()
    )
    pane = h.start()
    realcli.submit(pane, "please ping-7f3a now")
    model.wait_for_prompt("ping-7f3a", 15)
    signals = h.wait_events("agent-turn-complete")
    assert first(signals, "agent-turn-complete").payload.get("turn-id")
    realcli_wait(lambda: theirs.exists(), 10, "the user's own notify to run")

    # Codex notifies for its thread-title side turn too (another thread); only the user's
    # turn is a run.
    def both() -> bool:
        signals.extend(h.inbox.drain())
        return sum(s.event == "agent-turn-complete" for s in signals) >= 2

    realcli_wait(both, 15, "codex's title side turn to notify as well")
    assert translated(signals) == ["run.completed"], [s.payload for s in signals]


def test_pi_extension_reaches_the_inbox(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    h = Hooked("pi", tmux, model, tmp_path)
    pane = h.start()
    realcli.submit(pane, "please ping-7f3a now")
    model.wait_for_prompt("ping-7f3a", 15)
    signals = h.wait_events("agent_start", "agent_end")
    assert first(signals, "agent_start").seq < first(signals, "agent_end").seq
    kinds = translated(signals)
    assert kinds.index("run.started") < kinds.index("run.completed")


def realcli_wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


EXPECTED = {
    "claude": ("UserPromptSubmit", "Stop"),
    "codex": ("agent-turn-complete",),
    "pi": ("agent_start", "agent_end"),
}


@pytest.mark.parametrize("runtime", ["claude", "codex", "pi"])
def test_agent_launch_under_a_bare_path_with_hooks(
    runtime: str,
    tmux: realcli.Tmux,
    model: FakeModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's own launch (Tmux.new_session + wire) of `command = "<runtime>"` while the
    agent itself has systemd's PATH: the roster PATH finds the CLI, the hooks report."""
    realcli.require_cli(runtime)
    root, state = tmp_path / runtime, tmp_path / "state"
    launch = runtime_home.seed(runtime, root, root / "project", model.url)
    receiver = HookReceiver(state)
    roster_env = realcli.node_path_env({**launch.env, "FLEET_SESSION": runtime})
    command, env = wire(runtime, runtime, state, [runtime, *launch.argv[1:]], roster_env)
    assert command[0] == runtime  # a bare name, resolved on the roster's PATH at launch
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the agent's PATH under systemd
    conf = tmp_path / "tmux.conf"
    conf.write_text(TMUX_CONF)  # what the agent's tmux server runs with
    agent_tmux = AgentTmux(tmux.socket, conf)

    async def start() -> None:
        await agent_tmux.new_session(
            runtime, command, cwd=str(launch.cwd), env=env, width=120, height=40
        )

    anyio.run(start)
    pane = realcli.Pane(tmux, runtime)
    pane.wait_for(realcli.SIGNS[runtime].is_idle, START_S, what=f"{runtime} idle")
    realcli.submit(pane, "please ping-7f3a now")
    model.wait_for_prompt("ping-7f3a", 15)
    drained: list = []
    deadline = time.monotonic() + 20
    while not all(n in {s.event for s, _ in drained} for n in EXPECTED[runtime]):
        assert time.monotonic() < deadline, [s.event for s, _ in drained]
        drained += receiver.drain()
        time.sleep(0.1)
    runs = RunTracker()
    events = hook_events(drained, Origin("t1", "h1", "b1"), runs)
    kinds = [e.event_type for e in events]
    assert "run.completed" in kinds and ("run.started" in kinds) is (runtime != "codex")
    assert receiver.state(runtime) is not None


# -- under the host agent ------------------------------------------------------------------------


@pytest.fixture
def hooked_fleet(
    nats_server: EmbeddedNats, tmp_path: Path, model: FakeModel
) -> Iterator[tuple[Fleet, str, str]]:
    """A controller and a host agent whose roster runs claude and pi: the agent wires the
    hooks at launch (agent/parts.py: HookReceiver, Launcher.prepare)."""
    binaries = {rt: realcli.require_cli(rt) for rt in DAEMON_RUNTIMES}
    fleet = Fleet(nats_server, tmp_path)
    tenant, socket = f"t{uuid.uuid4().hex[:8]}", f"fleet-hooks-{uuid.uuid4().hex[:8]}"
    sessions = []
    for rt in DAEMON_RUNTIMES:
        root = tmp_path / rt
        launch = runtime_home.seed(rt, root, root / "project", model.url, binary=str(binaries[rt]))
        env = realcli.node_path_env(launch.env)
        sessions.append(
            SessionSpec(name=rt, runtime=rt, command=launch.argv, cwd=str(launch.cwd), env=env)
        )
    try:
        fleet.start_controller(fleet.controller_config([tenant]))
        fleet.start_agent(fleet.agent_config(tenant, "h1", socket, sessions, window_width=120))
        yield fleet, tenant, socket
    finally:
        fleet.stop_all()
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


DAEMON_RUNTIMES = ["claude", "pi"]


def test_host_agent_turns_hooks_into_run_events(
    hooked_fleet: tuple[Fleet, str, str], model: FakeModel
) -> None:
    fleet, tenant, socket = hooked_fleet

    def events(session: str, event_type: str) -> list[dict[str, Any]]:
        args = ["events", "search", "--tenant", tenant, "--session", session, "--json"]
        result = fleet.cli(*args, "--type", event_type, "--limit", "100")
        assert result.returncode == 0, result.stderr
        return [json.loads(x) for x in result.stdout.splitlines()]

    server = realcli.Tmux.existing(socket)
    for rt in DAEMON_RUNTIMES:
        pane = realcli.Pane(server, f"={rt}:")
        wait_for(
            lambda rt=rt: server.run("has-session", "-t", f"={rt}", check=False).returncode == 0,
            30,
            what=f"the agent to launch {rt}",
        )
        pane.wait_for(realcli.SIGNS[rt].is_idle, START_S * 2, what=f"{rt} idle")
        realcli.submit(pane, f"please ping-7f3a from {rt}")
        model.wait_for_prompt(f"ping-7f3a from {rt}", 20)
    hook_of = {"claude": ("UserPromptSubmit", "Stop"), "pi": ("agent_start", "agent_end")}
    for rt in DAEMON_RUNTIMES:
        start, stop = hook_of[rt]
        started = wait_for(lambda rt=rt: events(rt, "run.started"), 30, 0.5, f"{rt} run.started")
        completed = wait_for(
            lambda rt=rt: events(rt, "run.completed"), 30, 0.5, f"{rt} run.completed"
        )
        assert started[0]["provenance"] == f"hook:{rt}:{start}", started[0]
        assert completed[0]["provenance"] == f"hook:{rt}:{stop}", completed[0]
        # The run the tracker reports carries the same id from start to complete.
        states = wait_for(
            lambda rt=rt: [e for e in events(rt, "run.state")
                           if e["payload"]["state"] == "complete"] or None,
            30, 0.5, f"{rt} run.state complete",
        )  # fmt: skip
        assert completed[0]["run_id"] == states[0]["run_id"]
        # `fleet explain` names the hook as what decides the idle state (fresh, and the
        # screen agrees), and still shows the screen rule and the title under it.
        shown = fleet.cli("explain", f"{tenant}/h1/{rt}", "--json")
        assert shown.returncode == 0, shown.stderr
        details = json.loads(shown.stdout)["details"]
        assert (details["state"], details["decided_by"]) == ("idle", "hook"), details
        assert details["hook"]["event"].startswith(f"hook:{rt}:"), details
        assert details["hook"]["decides"] and details["hook"]["seq"] >= 2, details
        assert details["screen_rule"]["state"] == "idle", details
