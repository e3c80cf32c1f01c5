"""Steering from the command line: send, cancel, watch, takeover, release, spawn, stop,
explain. Every verb goes through the controller (`fleet.ctl.cmd`)."""

from __future__ import annotations

import getpass
import os
import socket
import sys
import uuid
from typing import Annotated

import anyio
import msgspec
import typer

from controller.cli.client import CommandRefused, ControllerClient
from controller.cli.common import JsonOpt, NatsOpt, print_json, run_client
from protocol import api, decode
from protocol.commands import (
    SUCCESS,
    Body,
    Cancel,
    CommandRequest,
    CommandResult,
    Explain,
    Outcome,
    Release,
    Send,
    Spawn,
    Stop,
    Takeover,
    Watch,
    WatchFrame,
)
from protocol.events_api import EventsSearchRequest

# Exit codes: what scripts branch on.
EXIT_OK, EXIT_FAILED, EXIT_NOT_VERIFIED = 0, 1, 3


def session_name(target: str) -> str:
    """SESSION of a SESSION, HOST/SESSION or TENANT/HOST/SESSION target."""
    return target.rsplit("/", 1)[-1]


def operator() -> str:
    return os.environ.get("FLEET_OPERATOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def exit_code(result: CommandResult) -> int:
    if result.outcome in SUCCESS:
        return EXIT_OK
    return EXIT_NOT_VERIFIED if result.outcome is Outcome.NOT_VERIFIED else EXIT_FAILED


def run_command(
    target: str, body: Body, timeout_s: float, nats_url: str | None, json_out: bool
) -> None:
    request = CommandRequest(
        target=target,
        body=body,
        issued_by=operator(),
        timeout_s=timeout_s,
        command_id=uuid.uuid4().hex,
    )

    async def call(client: ControllerClient) -> CommandResult:
        client.timeout = timeout_s + 2.0
        return await client.call(api.CMD, request)

    result: CommandResult = run_client(call, nats_url, deadline=timeout_s + 5.0)
    if json_out:
        print_json(result)
    else:
        where = "/".join(p for p in (result.tenant, result.host, result.session) if p)
        stream = sys.stdout if result.outcome in SUCCESS else sys.stderr
        stream.write(f"{result.outcome.value}: {where + ': ' if where else ''}{result.message}\n")
        if result.screen:
            stream.write("--- screen ---\n" + result.screen + "\n")
    raise typer.Exit(exit_code(result))


def send(
    session: Annotated[str, typer.Argument(help="SESSION, HOST/SESSION or T/HOST/SESSION")],
    text: Annotated[str, typer.Argument(help="pasted literally, then Enter")],
    answer: Annotated[
        str | None,
        typer.Option(help="first answer the dialog of a blocked session (as `fleet answer`)"),
    ] = None,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify", help="prove delivery (default for interactive runtimes)"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds")] = 15.0,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Paste TEXT into a session and submit it. Exit 0 delivered or queued (the session
    was working), 3 not verified, 1 failed or blocked (a dialog is open: see `answer`)."""
    if answer is not None:
        from controller.cli.answer import check_choice  # answer builds on this module

        check_choice(answer)
    run_command(
        session,
        Send(
            session=session_name(session),
            text=text,
            verify=verify,
            timeout_s=max(1.0, timeout - 2.0),
            answer=answer,
        ),
        timeout,
        nats_url,
        json_out,
    )


def cancel(
    session: Annotated[str, typer.Argument()],
    timeout: Annotated[float, typer.Option(help="seconds")] = 15.0,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Interrupt the session's current run (its runtime's interrupt key)."""
    run_command(
        session,
        Cancel(session=session_name(session), timeout_s=max(1.0, timeout - 2.0)),
        timeout,
        nats_url,
        json_out,
    )


def takeover(
    session: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="why (shown to others)")],
    ttl: Annotated[float, typer.Option(help="lease seconds")] = 300.0,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Take the exclusive lease: only you may send/cancel until release or expiry."""
    run_command(
        session,
        Takeover(session=session_name(session), reason=reason, ttl_s=ttl),
        10.0,
        nats_url,
        json_out,
    )


def release(
    session: Annotated[str, typer.Argument()],
    force: Annotated[
        bool, typer.Option("--force", help="admins: release someone else's lease (audited)")
    ] = False,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Give back your takeover lease."""
    body = Release(session=session_name(session), force=force)
    run_command(session, body, 10.0, nats_url, json_out)


def spawn(
    where: Annotated[str, typer.Argument(help="TENANT/HOST")],
    name: Annotated[str, typer.Option("--name", help="session name")],
    runtime: Annotated[
        str | None,
        typer.Option(help="runtime (default: inferred from the command; stub without one)"),
    ] = None,
    ttl: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    command: Annotated[list[str] | None, typer.Argument(help="-- COMMAND ARGS")] = None,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Start an ephemeral worker session (not restarted; removed after its run or TTL)."""
    run_command(
        where,
        Spawn(session=name, runtime=runtime, command=command or None, ttl_s=ttl),
        15.0,
        nats_url,
        json_out,
    )


def stop(
    session: Annotated[str, typer.Argument()],
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Stop a session (a stopped core session is not restarted)."""
    run_command(session, Stop(session=session_name(session)), 10.0, nats_url, json_out)


def explain(
    session: Annotated[str, typer.Argument()],
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Which detection rule gives the session its state, on which screen line."""
    run_command(session, Explain(session=session_name(session)), 10.0, nats_url, json_out)


def watch(
    session: Annotated[str, typer.Argument()],
    events: Annotated[bool, typer.Option("--events", help="interleave its events")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="frames as JSON lines")] = False,
    nats_url: NatsOpt = None,
) -> None:
    """Read-only live view of a session's screen (never sends keys, never resizes)."""
    try:
        run_client(lambda c: _watch(c, session, events, json_out), nats_url, deadline=None)
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    # `fleet answer` builds on run_command here, so its module imports this one, not back.
    from controller.cli.answer import register_answer

    register_answer(app)
    for command in (send, cancel, takeover, release, spawn, stop, explain, watch):
        app.command()(command)


RENEW_S = 2.0
LEASE_S = 6.0


async def _watch(client: ControllerClient, target: str, with_events: bool, json_out: bool) -> None:
    watcher = f"{operator()}:{uuid.uuid4().hex[:8]}"
    name = session_name(target)
    # Frames come to our own inbox: the controller relays them (we may not see tenant subjects).
    deliver = client.nc.new_inbox()
    frames = await client.nc.subscribe(deliver)

    async def renew(resync: bool) -> CommandResult:
        req = CommandRequest(
            target=target,
            body=Watch(session=name, watcher=watcher, ttl_s=LEASE_S, resync=resync),
            issued_by=operator(),
            timeout_s=5.0,
            deliver=deliver,
        )
        result = await client.call(api.CMD, req)
        if result.outcome is not Outcome.OK:
            raise CommandRefused(f"watch {target}: {result.outcome.value}: {result.message}")
        return result

    first = await renew(False)
    await renew(True)  # the relay is in place now: ask for the snapshot it could have missed
    out = sys.stdout
    since = None

    async def renew_forever() -> None:
        while True:
            await anyio.sleep(RENEW_S)
            await renew(False)

    async def follow_events() -> None:
        nonlocal since
        seen: set[int] = set()
        while True:
            req = EventsSearchRequest(
                tenant=first.tenant, host=first.host, session=first.session, since=since, limit=50
            )
            reply = await client.call(api.EVENTS_SEARCH, req)
            for e in sorted(reply.events, key=lambda e: e.id):
                if e.id in seen:
                    continue
                seen.add(e.id)
                line = (
                    msgspec.json.encode({"event": e}).decode()
                    if json_out
                    else f"[event {e.id}] {e.event_type}: {e.summary}"
                )
                out.write(line + "\n")
            out.flush()
            await anyio.sleep(1.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(renew_forever)
        if with_events:
            import time

            since = time.time() - 60
            tg.start_soon(follow_events)
        async for msg in frames.messages:
            frame = decode(msg.data, WatchFrame)
            if json_out:
                out.write(msgspec.json.encode(frame).decode() + "\n")
            else:
                out.write("\x1b[H\x1b[2J" + frame.screen)
                out.write(
                    f"\n\x1b[7m watching {frame.tenant}/{frame.host}/{frame.session} "
                    f"(read-only, Ctrl-C to stop) \x1b[0m\n"
                )
            out.flush()
