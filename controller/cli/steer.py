"""Steering from the command line: send, cancel, watch, takeover, release, spawn, stop,
explain. Every verb goes through the controller (`fleet.ctl.cmd`)."""

from __future__ import annotations

import getpass
import os
import socket
import sys
import uuid
from typing import Annotated

import typer

from controller.cli.client import ControllerClient
from controller.cli.common import JsonOpt, NatsOpt, print_json, run_client
from controller.cli.watching import watch_session
from protocol import api
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
)

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
        run_client(
            lambda c: watch_session(
                c, session, session_name(session), operator(), events, json_out
            ),
            nats_url,
            deadline=None,
        )
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    # `fleet answer` builds on run_command here, so its module imports this one, not back.
    from controller.cli.answer import register_answer

    register_answer(app)
    for command in (send, cancel, takeover, release, spawn, stop, explain, watch):
        app.command()(command)
