"""The tmux_socket fixture's clean-up ends the servers of the test's own sockets (its name
and names derived from it) and no other: a server on a name that merely shares the prefix,
or on any other name, keeps running."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.fleet import end_tmux_servers


def _start(socket: str) -> None:
    subprocess.run(
        ["tmux", "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "s", "sleep 600"],
        check=True,
        capture_output=True,
    )


def _alive(socket: str) -> bool:
    found = subprocess.run(["tmux", "-L", socket, "has-session"], capture_output=True)
    return found.returncode == 0


@pytest.fixture
def sockets() -> Iterator[dict[str, str]]:
    base = f"fleet-cleanup-{uuid.uuid4().hex[:10]}"
    names = {
        "own": base,
        "derived": f"{base}-h1",
        "prefix_only": f"{base}x",  # not `<name>-…`: somebody else's
        "other": f"fleet-other-{uuid.uuid4().hex[:10]}",
    }
    for socket in names.values():
        _start(socket)
    yield names
    for socket in names.values():  # all of them ours: started just above
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def test_ends_its_own_and_derived_servers_only(sockets: dict[str, str]) -> None:
    asked = end_tmux_servers(sockets["own"])
    assert asked == [sockets["own"], sockets["derived"]]
    assert not _alive(sockets["own"]) and not _alive(sockets["derived"])
    assert _alive(sockets["prefix_only"]) and _alive(sockets["other"])
