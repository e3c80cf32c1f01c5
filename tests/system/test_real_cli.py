"""The real Claude Code, Codex and pi CLIs in real tmux, against the fake model.

No NATS and no host agent here: these prove the infrastructure the fleet tests build on — the
pinned CLIs start with a seeded HOME straight to their idle prompt, take a bracketed paste,
send it to the fake model, stream its answer, stop on their interrupt key and show an approval
dialog for a tool call (pi never asks). The CLIs come from `./dev.sh setup`
(.cache/agent-clis); without them these tests skip, or fail under CI.

Every wait is a deadline on a screen condition (tests/support/realcli.py), never a sleep.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import realcli
from tests.support.fake_model import FakeModel, Script, stream, text, tool_call

pytestmark = pytest.mark.timeout(60)

RUNTIMES = ["claude", "codex", "pi"]
APPROVING = ["claude", "codex"]  # pi has no approvals: test_pi_runs_tools_without_asking
INTERRUPTED = {
    "claude": "Interrupted",
    "codex": "Conversation interrupted",
    "pi": "Operation aborted",
}
START_S = 30.0  # a cold node start of Claude Code takes ~3 s here; CI machines are slower

# Claude Code shows a streamed answer a line at a time: several lines, so part shows early.
STREAMED = "streamed-91ab line one\nline two\nline three\nline four\nline five\ndone-91ab"
LONG_ANSWER = "\n".join(" ".join(f"tok{i + j}" for j in range(5)) for i in range(0, 60, 5))


def make_script(touch: Path) -> Script:
    return (
        Script()
        .on("ping-7f3a", text("pong-7f3a answered"))
        .on("multi-2c9e", text("multi-2c9e answered"))
        .on("long-5d1b", text("long-5d1b answered"))
        .on("stream-91ab", stream(STREAMED, 4))
        .on("forever-44e0", stream(LONG_ANSWER, 30))
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
    with realcli.Tmux("test") as t:
        yield t


def start(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, root: Path, **seed_kw: object
) -> realcli.Pane:
    pane, _ = realcli.start_runtime(tmux, runtime, root, model.url, **seed_kw)
    return pane


def start_idle(runtime: str, tmux: realcli.Tmux, model: FakeModel, root: Path) -> realcli.Pane:
    pane = start(runtime, tmux, model, root)
    pane.wait_for(realcli.SIGNS[runtime].is_idle, START_S, what=f"{runtime} idle")
    return pane


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_starts_idle_without_any_dialog(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    pane = start_idle(runtime, tmux, model, tmp_path / runtime)
    screen = pane.capture()
    assert not realcli.FIRST_RUN_DIALOGS.search(screen), screen
    assert not realcli.SIGNS[runtime].is_blocked(screen, pane.title()), screen
    # Seeded right, a runtime asks the model nothing before the first prompt.
    assert [r for r in model.requests if r.main] == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pasted_prompt_reaches_the_model_and_the_answer_streams(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    signs = realcli.SIGNS[runtime]
    pane = start_idle(runtime, tmux, model, tmp_path / runtime)
    realcli.submit(pane, "please stream-91ab an answer")
    request = model.wait_for_prompt("stream-91ab", 15)
    assert request.api == ("responses" if runtime == "codex" else "anthropic")
    assert "please stream-91ab an answer" in request.prompt
    pane.wait_for(
        lambda s, t: "streamed-91ab" in s and signs.is_working(s, t),
        10,
        what="the first streamed words while working",
    )
    pane.wait_for(
        lambda s, t: "done-91ab" in s and signs.is_idle(s, t),
        15,
        what="the whole answer, then idle",
    )
    assert request.done.is_set() and not request.hung_up


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_multiline_and_long_pastes_arrive_whole(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    signs = realcli.SIGNS[runtime]
    pane = start_idle(runtime, tmux, model, tmp_path / runtime)
    multi = "multi-2c9e first line\nsecond line\nthird line"
    realcli.submit(pane, multi)
    request = model.wait_for_prompt("multi-2c9e", 15)
    assert multi in request.prompt, request.prompt
    pane.wait_for(
        lambda s, t: "multi-2c9e answered" in s and signs.is_idle(s, t),
        15,
        what="the multi-line answer",
    )

    long = "long-5d1b " + " ".join(f"w{i:03d}" for i in range(48))  # 200 characters
    assert len(long) >= 200
    realcli.submit(pane, long)
    request = model.wait_for_prompt("long-5d1b", 15)
    assert long in request.prompt, request.prompt
    pane.wait_for(
        lambda s, t: "long-5d1b answered" in s and signs.is_idle(s, t), 15, what="the long answer"
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_escape_interrupts_a_streaming_answer(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    signs = realcli.SIGNS[runtime]
    pane = start_idle(runtime, tmux, model, tmp_path / runtime)
    realcli.submit(pane, "forever-44e0 please")
    request = model.wait_for_prompt("forever-44e0", 15)
    pane.wait_for(
        lambda s, t: "tok2 " in s and signs.is_working(s, t), 15, what="streaming under way"
    )
    pane.send_keys("Escape")
    pane.wait_for(
        lambda s, t: INTERRUPTED[runtime] in s and signs.is_idle(s, t), 10, what="the interrupt"
    )
    # The CLI dropped the stream: the fake model's next write fails.
    assert request.done.wait(10), "the stream was not cut"
    assert request.hung_up
    assert "tok59" not in pane.capture()


@pytest.mark.parametrize("runtime", APPROVING)
def test_tool_call_shows_an_approval_dialog(
    runtime: str, tmux: realcli.Tmux, model: FakeModel, tmp_path: Path, touch_file: Path
) -> None:
    signs = realcli.SIGNS[runtime]
    pane = start_idle(runtime, tmux, model, tmp_path / runtime)
    realcli.submit(pane, "run tool-0b7c now")
    model.wait_for_prompt("tool-0b7c", 15)
    screen = pane.wait_for(signs.is_blocked, 15, what="the approval dialog")
    assert "touch" in screen, screen
    assert not signs.is_idle(screen, pane.title())
    assert not touch_file.exists(), "the command ran without approval"
    if runtime == "codex":
        assert "Action Required" in pane.title()
    pane.send_keys("Escape")  # decline
    pane.wait_for(signs.is_idle, 15, what="idle after declining")
    assert not touch_file.exists()


def test_pi_runs_tools_without_asking(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path, touch_file: Path
) -> None:
    """pi's core has no approvals (docs/runtimes.md): blocked-on-approval is n/a for pi."""
    signs = realcli.SIGNS["pi"]
    pane = start_idle("pi", tmux, model, tmp_path / "pi")
    realcli.submit(pane, "run tool-0b7c now")
    model.wait_for(lambda r: r.main and r.after_tool, 15)
    pane.wait_for(
        lambda s, t: "The command finished." in s and signs.is_idle(s, t),
        15,
        what="the answer after the tool",
    )
    assert touch_file.exists()


def test_claude_untrusted_folder_shows_the_trust_dialog(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    pane = start("claude", tmux, model, tmp_path / "claude", trust=False)
    screen = pane.wait_for("Yes, I trust this folder", START_S, what="the trust dialog")
    assert "Quick safety check" in screen
    # The select cursor before "1. Yes, I trust this folder" is not the input box.
    assert not realcli.SIGNS["claude"].is_idle(screen, pane.title())
    assert [r for r in model.requests if r.main] == []


def test_claude_unapproved_key_shows_the_api_key_dialog(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    pane = start("claude", tmux, model, tmp_path / "claude", approve_key=False)
    screen = pane.wait_for("Detected a custom API key", START_S, what="the API-key dialog")
    assert "Do you want to use this API key?" in screen
    assert not realcli.SIGNS["claude"].is_idle(screen, pane.title())


def test_codex_untrusted_git_repo_shows_the_trust_dialog(
    tmux: realcli.Tmux, model: FakeModel, tmp_path: Path
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    # Codex asks about trust only for a folder inside a git repository.
    project = tmp_path / "codex" / "project"
    project.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    pane = start("codex", tmux, model, tmp_path / "codex", trust=False)
    screen = pane.wait_for("Trust this folder?", START_S, what="the trust dialog")
    assert "1. Trust and continue" in screen
    assert not realcli.SIGNS["codex"].is_idle(screen, pane.title())
    assert [r for r in model.requests if r.main] == []
