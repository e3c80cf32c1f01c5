"""Real parts for every test: a nats-server per module, a private tmux socket per test, the
daemons as real subprocesses stopped by the pid we started (never by name). The helpers live
in tests/support/fleet.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.natsserver.embedded import EmbeddedNats
from tests.support.fleet import Fleet, end_tmux_servers


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A private tmux socket name; at the end its server is killed, and so is the server of
    every socket the test derived from it (`<name>-h1`, `<name>-top`): all the test's own."""
    name = f"fleet-test-{uuid.uuid4().hex[:10]}"
    yield name
    end_tmux_servers(name)


@pytest.fixture
def fleet(nats_server: EmbeddedNats, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(nats_server, tmp_path)
    yield f
    f.stop_all()
