"""`send` and `answer` against the real Claude Code, Codex and pi CLIs, against the fake model.

The host agent's own `Steering` (agent/control/steering.py) drives a real tmux pane; no NATS
(tests/system/test_steering.py covers the command path with the stub). What must hold:

- `send --verify` delivers short, 200-character and multi-line text whole to the model;
- a session blocked on a tool-approval dialog refuses `send`: nothing is typed, the dialog
  is still pending afterwards and the tool did not run;
- `answer` presses the named choice, and only then does the tool run;
- `send` to a working session answers `queued`, and the runtime runs the prompt later.

Every wait is a deadline on a condition (tests/support/realcli.py), never a sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from agent.control.steering import Outcomes, Steering
from agent.discovery.runtimes import RuntimeSpec, load_runtimes
from agent.discovery.tmux import Pane as AgentPane
from agent.discovery.tmux import Tmux as AgentTmux
from protocol.commands import Outcome
from tests.support import realcli
from tests.support.fake_model import FakeModel, Script, silent, text, tool_call

pytestmark = pytest.mark.timeout(90)

RUNTIMES = ["claude", "codex", "pi"]
APPROVING = ["claude", "codex"]  # pi's core never asks before a tool (docs/runtimes.md)
START_S = 30.0
SEND_S = 10.0

SHORT = "ping-7f3a please"
LONG = "long-5d1b " + " ".join(f"w{i:03d}" for i in range(48))  # 200 characters
MULTI = "multi-2c9e first line\nsecond line; with a semicolon;\nthird line"
WIDE = "wide-8c4a " + "x" * 190  # one long word: the input box wraps it under the first
# What each approval dialog asks (the line `send` names when it refuses).
QUESTION = {
    "claude": "Do you want to proceed?",
    "codex": "Would you like to run the following command?",
}


def make_script(touch: Path) -> Script:
    return (
        Script()
        .on("ping-7f3a", text("ping-7f3a answered"))
        .on("long-5d1b", text("long-5d1b answered"))
        .on("multi-2c9e", text("multi-2c9e answered"))
        .on("wide-8c4a", text("wide-8c4a answered"))
        .on("think-3e8d", silent(8, then="think-3e8d answered"))
        .on("queued-6a2f", text("queued-6a2f answered"))
        .on("tool-0b7c", tool_call(f"touch {touch}"))
    )


@pytest.fixture
def touch_file(tmp_path: Path) -> Path:
    return tmp_path / "touched-by-tool"


@pytest.fixture
def model(touch_file: Path) -> Iterator[FakeModel]:
    with FakeModel(make_script(touch_file)) as m:
        yield m


@pytest.fixture
def tmux() -> Iterator[realcli.Tmux]:
    with realcli.Tmux("send") as t:
        yield t


@dataclass
class Driven:
    """One real CLI in a tmux pane, steered by the host agent's Steering."""

    screen: realcli.Pane  # the test's view: captures and waits
    signs: realcli.Signs
    steering: Steering
    spec: RuntimeSpec
    pane: AgentPane

    def send(self, text: str, verify: bool = True, answer: str | None = None) -> Outcomes:
        extra = {"answer": answer} if answer is not None else {}
        return anyio.run(
            lambda: self.steering.send(self.pane, self.spec, text, verify, SEND_S, **extra)
        )

    def answer(self, choice: str) -> Outcomes:
        return anyio.run(lambda: self.steering.answer(self.pane, self.spec, choice, 5.0))

    def wait_idle(self, what: str, needle: str = "") -> None:
        self.screen.wait_for(lambda s, t: needle in s and self.signs.is_idle(s, t), 20, what=what)


def drive(runtime: str, tmux: realcli.Tmux, model: FakeModel, root: Path) -> Driven:
    screen, _ = realcli.start_runtime(tmux, runtime, root, model.url)
    signs = realcli.SIGNS[runtime]
    screen.wait_for(signs.is_idle, START_S, what=f"{runtime} idle")
    agent_tmux = AgentTmux(tmux.socket, Path("/dev/null"))
    panes = anyio.run(agent_tmux.list_panes)
    pane = next(p for p in panes if p.session == screen.target)
    steering = Steering(agent_tmux)
    return Driven(screen, signs, steering, load_runtimes()[runtime], pane)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_send_verify_delivers_short_long_and_multiline_text(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    d = drive(runtime, tmux, model, tmp_path / runtime)
    texts = ((SHORT, "ping-7f3a"), (LONG, "long-5d1b"), (WIDE, "wide-8c4a"), (MULTI, "multi-2c9e"))
    for sent, marker in texts:
        out = d.send(sent)
        assert out.outcome is Outcome.DELIVERED, out
        assert out.details and out.details["enters"] == 1, out  # taken at the first Enter
        request = model.wait_for_prompt(marker, 15)
        assert sent in request.prompt, request.prompt
        d.wait_idle(f"the answer to {marker}", f"{marker} answered")
    # One prompt per send: no retry Enter submitted anything twice.
    assert len([p for p in model.prompts() if "ping-7f3a" in p]) == 1


@pytest.mark.parametrize("runtime", APPROVING)
def test_send_to_a_blocked_session_is_refused_and_answer_chooses(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path, touch_file: Path
) -> None:
    d = drive(runtime, tmux, model, tmp_path / runtime)
    out = d.send("run tool-0b7c now")
    assert out.outcome is Outcome.DELIVERED, out
    dialog = d.screen.wait_for(d.signs.is_blocked, 15, what="the approval dialog")
    requests = len(model.requests)
    # "please stop": its "p" is Codex's "Yes, and don't ask again"; Enter is "1. Yes".
    out = d.send("please stop")
    assert out.outcome is Outcome.BLOCKED, out
    assert out.message.startswith(f"blocked: {QUESTION[runtime]}"), out.message
    after = d.screen.capture()
    assert d.signs.is_blocked(after, d.screen.title()), after
    assert after.count("please stop") == 0, after  # nothing typed anywhere
    assert len(model.requests) == requests
    assert not touch_file.exists(), "sending text approved the tool call"
    assert QUESTION[runtime] in dialog

    out = d.answer("1")
    assert out.outcome is Outcome.OK, out
    assert out.details and out.details["question"] == QUESTION[runtime]
    model.wait_for(lambda r: r.main and r.after_tool, 15)
    d.wait_idle("the answer after the tool ran", "The command finished.")
    assert touch_file.exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_send_to_a_working_session_is_queued(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    d = drive(runtime, tmux, model, tmp_path / runtime)
    out = d.send("think-3e8d for a while")
    assert out.outcome is Outcome.DELIVERED, out
    d.screen.wait_for(d.signs.is_working, 10, what="working on the first prompt")
    out = d.send("queued-6a2f next please")
    assert out.outcome is Outcome.QUEUED, out
    assert out.details and "enters" not in out.details  # one submit key, no retries
    request = model.wait_for_prompt("queued-6a2f", 30)
    assert "queued-6a2f next please" in request.prompt
    d.wait_idle("the queued prompt answered", "queued-6a2f answered")


@pytest.mark.parametrize("runtime", APPROVING)
def test_send_answer_declines_then_sends_the_correction(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path, touch_file: Path
) -> None:
    d = drive(runtime, tmux, model, tmp_path / runtime)
    assert d.send("run tool-0b7c now").outcome is Outcome.DELIVERED
    d.screen.wait_for(d.signs.is_blocked, 15, what="the approval dialog")
    # "3. No" on Claude's menu, "3. No, and tell Codex what to do differently" on Codex's.
    out = d.send("ping-7f3a instead, no tool", answer="3")
    assert out.outcome is Outcome.DELIVERED, out
    assert out.details and out.details["answered"]["question"] == QUESTION[runtime], out
    request = model.wait_for_prompt("ping-7f3a", 15)
    assert "ping-7f3a instead, no tool" in request.prompt
    # Claude sends the correction with the rejected tool's result: the fake model answers
    # that as a turn after a tool, not with the ping rule.
    d.wait_idle("idle after the correction")
    assert not touch_file.exists(), "the declined tool ran"
