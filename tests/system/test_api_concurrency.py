"""The API never queues behind a slow request (issue 15): each request runs in its own task,
so `ps` and other sessions' sends are answered while one `send --verify` retries for ~15 s.
Real NATS, real tmux, a real controller and host agent."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import anyio
import nats

from agent.config import SessionSpec
from controller.api.service import ApiService, LaneLimit
from controller.natsserver.embedded import EmbeddedNats
from protocol import decode, encode
from protocol.api import CMD, PS, ApiError, ErrorCode, PsReply, PsRequest
from protocol.commands import CommandRequest, CommandResult, Outcome, Send, Watch
from tests.support.fleet import Fleet, rows_by_session, wait_for

# A composer that shows what is typed and never submits (raw mode, Enter dropped): a
# verified send into it presses Enter 4 times over ~15 s before it gives up.
SWALLOWER = """
import os, sys, tty
tty.setraw(0)
os.write(1, b"stub> ")
while True:
    data = os.read(0, 1024)
    if not data:
        break
    os.write(1, bytes(c for c in data if c not in (10, 13)))
"""


def send(target: str, text: str, timeout_s: float) -> CommandRequest:
    return CommandRequest(
        target=target,
        body=Send(session=target, text=text, verify=True, timeout_s=timeout_s),
        issued_by="test",
        timeout_s=timeout_s + 5,
    )


def test_ps_and_other_sends_are_answered_while_a_slow_send_runs(
    fleet: Fleet, tmux_socket: str
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fleet.start_controller(fleet.controller_config([tenant]))
    sessions = [
        SessionSpec(name="deaf", runtime="stub", command=[sys.executable, "-c", SWALLOWER]),
        SessionSpec(
            name="coder",
            runtime="stub",
            env={"FLEET_STUB_WORK_SECONDS": "0.2", "FLEET_STUB_STEPS": "1"},
        ),
    ]
    fleet.start_agent(fleet.agent_config(tenant, "h1", tmux_socket, sessions))

    def idle() -> bool:
        rows = rows_by_session(fleet.ps("--tenant", tenant))
        return all(rows.get(s.name, {}).get("session", {}).get("state") == "idle" for s in sessions)

    wait_for(idle, timeout=30, what="both sessions idle")

    async def main() -> None:
        nc = await nats.connect(fleet.nats.url)
        slow_done = anyio.Event()
        slow: list[CommandResult] = []
        try:
            async with anyio.create_task_group() as tg:

                async def slow_send() -> None:
                    msg = await nc.request(
                        "fleet.ctl.cmd", encode(send("deaf", "anyone there", 20)), timeout=30
                    )
                    slow.append(decode(msg.data, CommandResult))
                    slow_done.set()

                tg.start_soon(slow_send)
                # The slow send has reached the agent once the text sits in its input box.
                await anyio.to_thread.run_sync(
                    lambda: wait_for(
                        lambda: "anyone there" in pane(tmux_socket, "deaf"), what="text typed"
                    )
                )
                answers: list[PsReply | ApiError] = []
                other: list[CommandResult] = []

                async def ps() -> None:
                    msg = await nc.request(PS.subject, encode(PsRequest(tenant=tenant)), timeout=30)
                    answers.append(decode(msg.data, PsReply | ApiError))

                async def other_send() -> None:
                    msg = await nc.request(
                        "fleet.ctl.cmd", encode(send("coder", "quick one", 10)), timeout=30
                    )
                    other.append(decode(msg.data, CommandResult))

                async with anyio.create_task_group() as burst:
                    burst.start_soon(other_send)
                    for _ in range(200):
                        burst.start_soon(ps)
                # Everything else was answered while the slow send was still retrying.
                assert not slow_done.is_set(), slow
                assert len(answers) == 200
                assert all(isinstance(a, PsReply) and a.total == 2 for a in answers), answers[:3]
                assert other[0].outcome is Outcome.DELIVERED, other
                await slow_done.wait()
        finally:
            await nc.close()
        assert slow[0].outcome is Outcome.NOT_VERIFIED, slow

    anyio.run(main)


def pane(socket: str, session: str) -> str:
    return subprocess.run(
        ["tmux", "-L", socket, "capture-pane", "-p", "-t", f"={session}:"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def test_a_full_lane_answers_busy_and_starves_no_other(nats_server: EmbeddedNats) -> None:
    """1,000 slow sends fill the `cmd.send` lane only: past its running and waiting slots the
    lane answers `busy` at once, while `ps` and `cmd.watch` keep their own slots."""
    release = anyio.Event()
    started: list[str] = []

    async def handle(req: CommandRequest) -> CommandResult:
        started.append(req.body.session)
        if isinstance(req.body, Send):
            await release.wait()
        return CommandResult(command_id="c" * 8, outcome=Outcome.OK, message="done")

    async def ps(_req: PsRequest) -> PsReply:
        return PsReply(rows=[], total=0, next_cursor=None)

    def watch() -> CommandRequest:
        body = Watch(session="w", watcher="x")
        return CommandRequest(target="w", body=body, issued_by="test")

    async def main() -> None:
        service = ApiService(
            f"q{uuid.uuid4().hex[:6]}", {"cmd.send": LaneLimit(running=100, waiting=100)}
        )
        service.route(CMD, handle)
        service.route(PS, ps)
        nc = await nats.connect(nats_server.url)
        sends: list[CommandResult | ApiError] = []

        async def request(req: object, into: list[Any]) -> None:
            msg = await nc.request(
                CMD.subject if req is not None else PS.subject,
                encode(req if req is not None else PsRequest()),
                timeout=30,
            )
            into.append(decode(msg.data, CommandResult | PsReply | ApiError))

        try:
            async with anyio.create_task_group() as tg:
                await service.start(nc)
                await tg.start(service.run)
                async with anyio.create_task_group() as burst:
                    for i in range(1000):
                        burst.start_soon(request, send(f"s{i}", "x", 10), sends)
                    # Wait until every send was answered busy or is held by its handler.
                    await anyio.to_thread.run_sync(
                        lambda: wait_for(lambda: len(sends) == 800, what="800 busy answers")
                    )
                    others: list[Any] = []
                    for _ in range(50):
                        burst.start_soon(request, None, others)
                    burst.start_soon(request, watch(), others)
                    await anyio.to_thread.run_sync(
                        lambda: wait_for(lambda: len(others) == 51, what="ps and watch answered")
                    )
                    assert len(started) == 101  # 100 sends running (+ the watch), 100 waiting
                    release.set()
                await service.stop()
                tg.cancel_scope.cancel()
        finally:
            await nc.close()
        busy = [r for r in sends if isinstance(r, ApiError)]
        assert len(busy) == 800 and all(r.code is ErrorCode.BUSY for r in busy)
        assert sum(isinstance(r, CommandResult) for r in sends) == 200
        assert service.busy == service.counters()["api_busy"] == 800

    anyio.run(main)
