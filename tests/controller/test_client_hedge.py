"""Hedged reads in the CLI's client: a replica that never answers (paused) costs a second
draw in the queue group, not a failed call; commands are never asked twice."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from controller.cli.client import ControllerClient, NatsSettings
from protocol import encode
from protocol.api import CMD, PS, PsReply, PsRequest


class Group:
    """A queue group whose first ``silent`` draws go to a replica that never answers."""

    def __init__(self, silent: int) -> None:
        self.silent = silent
        self.asked = 0

    async def request(self, subject: str, data: bytes, timeout: float) -> Any:  # noqa: ASYNC109 (nats-py's signature)
        self.asked += 1
        if self.asked <= self.silent:
            await asyncio.sleep(timeout)
            raise NatsTimeoutError
        return type("Msg", (), {"data": encode(PsReply(rows=[], total=0, next_cursor=None))})()


def client(group: Group, timeout: float = 3.0) -> ControllerClient:
    c = ControllerClient(NatsSettings(servers=["nats://127.0.0.1:1"]), timeout=timeout)
    c._nc = group  # the connection is all the client uses of nats-py here
    return c


def test_a_silent_replica_costs_a_hedge_not_the_call() -> None:
    group = Group(silent=3)
    c = client(group)
    reply = anyio.run(c.call, PS, PsRequest())
    assert isinstance(reply, PsReply)
    assert (group.asked, c.hedged) == (4, 3)


def test_an_answering_replica_is_asked_once() -> None:
    group = Group(silent=0)
    c = client(group)
    anyio.run(c.call, PS, PsRequest())
    assert (group.asked, c.hedged) == (1, 0)


def test_commands_are_never_hedged() -> None:
    group = Group(silent=1)
    c = client(group, timeout=0.5)
    with pytest.raises(Exception, match="did not answer cmd"):
        anyio.run(c.call, CMD, PsRequest())
    assert group.asked == 1
