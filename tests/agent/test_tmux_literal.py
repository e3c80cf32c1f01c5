"""No tmux command injection through session arguments (issue 15 item 1): every argument we
hand tmux arrives in the pane's process exactly as given, and nothing after it runs as a tmux
command. Real tmux on a private socket; hypothesis picks the arguments."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.discovery.tmux import Tmux, literal

# Text a command line can carry: anything but NUL (argv is NUL-terminated).
ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
TRICKY = st.sampled_from([";", "5;", "a;b;", "\\;", ";;", "x ; kill-server", "{", "}", "'", '"'])


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"fleet-lit-{uuid.uuid4().hex[:8]}")
    # A session of someone else's on the same server: it must survive every spawn.
    subprocess.run(
        ["tmux", "-L", t.socket_name, "new-session", "-d", "-s", "coder", "sleep 600"],
        check=True,
    )
    yield t
    t.kill_server_sync()


def _sessions(t: Tmux) -> set[str]:
    out = subprocess.run(
        ["tmux", "-L", t.socket_name, "list-sessions", "-F", "#{session_name}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return set(out.split())


def _spawn_and_read(t: Tmux, out: Path, args: list[str]) -> list[str]:
    name = f"s{uuid.uuid4().hex[:8]}"
    script = 'printf "%s\\0" "$@" > "$0"'
    anyio.run(
        lambda: t.new_session(
            name, ["/bin/sh", "-c", script, str(out), *args], cwd=None, env={}, width=80, height=24
        )
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        dead = subprocess.run(
            [
                "tmux",
                "-L",
                t.socket_name,
                "display-message",
                "-p",
                "-t",
                f"={name}:",
                "#{pane_dead}",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dead == "1":
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"the pane of {name} never finished")
    subprocess.run(["tmux", "-L", t.socket_name, "kill-session", "-t", f"={name}"], check=False)
    data = out.read_bytes().decode()
    return data.split("\0")[:-1]


def test_literal_escapes_only_a_trailing_semicolon() -> None:
    assert literal("5;") == "5\\;"
    assert literal(";") == "\\;"
    assert literal("a;b") == "a;b"
    assert literal("plain") == "plain"


def test_the_injection_from_the_report_kills_nothing(tmux: Tmux, tmp_path: Path) -> None:
    args = ["5;", "kill-session", "-t", "=coder"]
    assert _spawn_and_read(tmux, tmp_path / "out", args) == args
    assert "coder" in _sessions(tmux)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=st.lists(st.one_of(ARG, TRICKY), min_size=1, max_size=6))
def test_any_argument_arrives_as_given(tmux: Tmux, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
    assert _spawn_and_read(tmux, out, args) == args
    assert "coder" in _sessions(tmux)
