"""Emission blocks printed by the real Claude Code, Codex and pi, read through a real
`tmux pipe-pane` log by the host agent's reader (agent/events/capture.py), exactly once.

The fake model answers one prompt with prose and three blocks: a short event, one wider than
the pane (the TUI wraps it) and a broken one. Each event must be read exactly once with its
unique marker and the broken block must give exactly one `validation_error`, however the TUI
redraws. The CLIs come from `./dev.sh setup`; without them these tests skip (fail under CI).
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.events.capture import CaptureSet
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END, Emitted, Invalid, Result
from tests.support import realcli
from tests.support.fake_model import FakeModel, Script, text

pytestmark = pytest.mark.timeout(90)

START_S = 30.0


def answer(marker: str) -> tuple[str, dict[str, str]]:
    summaries = {
        "short": f"short-{marker}",
        "long": " ".join([f"long-{marker}", *(f"w{i:02d}" for i in range(60)), "end"]),
    }
    short = json.dumps({"event_type": "tool_call", "summary": summaries["short"]})
    long = json.dumps({"event_type": "run.completed", "summary": summaries["long"]})
    broken = '{"event_type": "tool_call", "summary": "broken-' + marker + '", "tags": ["x"'
    parts = [
        f"Blocks for {marker}:",
        *(f"{DEFAULT_BEGIN}\n{body}\n{DEFAULT_END}" for body in (short, long, broken)),
        f"All done {marker}.",
    ]
    return "\n\n".join(parts), summaries


@pytest.fixture
def tmux() -> Iterator[realcli.Tmux]:
    with realcli.Tmux("emission") as t:
        yield t


@pytest.mark.parametrize("runtime", ["claude", "codex", "pi"])
def test_real_cli_block_is_read_exactly_once(
    runtime: str, tmux: realcli.Tmux, tmp_path: Path
) -> None:
    marker = f"{runtime}-{uuid.uuid4().hex[:8]}"
    reply, summaries = answer(marker)
    signs = realcli.SIGNS[runtime]
    with FakeModel(Script().on("emit-blocks", text(reply))) as model:
        pane, _ = realcli.start_runtime(tmux, runtime, tmp_path / runtime, model.url)
        pane.wait_for(signs.is_idle, START_S, what=f"{runtime} idle")
        logs = tmp_path / "logs"
        logs.mkdir()
        captures = CaptureSet(logs)
        log = captures.track("s", DEFAULT_BEGIN, DEFAULT_END, None, (tmux.width, tmux.height))
        tmux.run("pipe-pane", "-t", pane.target, f"exec cat >> {shlex.quote(str(log.path))}")

        results: list[Result] = []
        realcli.submit(pane, "please emit-blocks now")
        model.wait_for_prompt("emit-blocks", 15)

        def shown(screen: str, title: str) -> bool:
            results.extend(log.read(time.monotonic()))  # read while the TUI draws
            return f"All done {marker}." in screen and signs.is_idle(screen, title)

        pane.wait_for(shown, 20, what="the answer, then idle")
        # The log may trail the screen by a moment: read until all three blocks are in.
        deadline = time.monotonic() + 10
        while len(results) < 3 and time.monotonic() < deadline:
            results.extend(log.read(time.monotonic()))
            time.sleep(0.05)
        tmux.run("pipe-pane", "-t", pane.target)  # closed: nothing more will come
        results.extend(log.read(time.monotonic()))

    emitted = sorted(r.summary for r in results if isinstance(r, Emitted))
    assert emitted == sorted(summaries.values()), (results, pane.capture())
    invalid = [r for r in results if isinstance(r, Invalid)]
    assert [r.reason for r in invalid] == ["invalid_json"], invalid
    assert f"broken-{marker}" in invalid[0].excerpt
