"""`fleet ps` and `fleet status`: the fleet as the controller sees it."""

from __future__ import annotations

import sys
from typing import Annotated

import anyio
import msgspec
import typer

from controller.cli.client import ControllerClient
from controller.cli.common import CLI_DEADLINE_S, JsonOpt, NatsOpt, console, print_json, run_client
from protocol import api
from protocol.api import PsRequest, PsRow, StatusReply, StatusRequest


def ps(
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    host: Annotated[str | None, typer.Option(help="only this host")] = None,
    state: Annotated[
        str | None, typer.Option(help="only rows whose host or session is in this state")
    ] = None,
    problems: Annotated[
        bool, typer.Option("--problems", help="only rows with a problem (host not ok, or a flag)")
    ] = False,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """List every session on every host: state, heartbeat age, and flags."""
    request = PsRequest(tenant=tenant, host=host, state=state, problems=problems)

    if json_out:
        # Streamed page by page: a listing of 500,000 rows never sits in one message.
        async def stream(client: ControllerClient) -> None:
            out = sys.stdout.buffer
            cursor: int | None = 0
            opened = False
            while cursor is not None:
                page = msgspec.structs.replace(request, cursor=cursor)
                # The CLI's deadline bounds the first answer (is a controller there?); each
                # later page is bounded by the client's request timeout, so a listing of any
                # size completes.
                with anyio.fail_after(CLI_DEADLINE_S if cursor == 0 else None):
                    reply = await client.call(api.PS, page)
                for row in reply.rows:
                    out.write(b",\n" if opened else b"[\n")
                    out.write(msgspec.json.encode(row))
                    opened = True
                cursor = reply.next_cursor
            out.write(b"\n]\n" if opened else b"[]\n")
            out.flush()

        run_client(stream, nats_url, deadline=None)
        return

    async def collect(client: ControllerClient) -> tuple[list[PsRow], dict[str, int]]:
        rows: list[PsRow] = []
        counts: dict[str, int] = {}
        cursor: int | None = 0
        while cursor is not None:
            with anyio.fail_after(CLI_DEADLINE_S if cursor == 0 else None):
                reply = await client.call(api.PS, msgspec.structs.replace(request, cursor=cursor))
            rows.extend(reply.rows)
            counts = counts or reply.hosts_by_state
            cursor = reply.next_cursor
        return rows, counts

    from controller.cli.render import print_ps

    rows, counts = run_client(collect, nats_url, deadline=None)
    print_ps(console, rows, counts)


def status(json_out: JsonOpt = False, nats_url: NatsOpt = None) -> None:
    """The controller's version, tenants, host count and counters."""

    async def call(client: ControllerClient) -> StatusReply:
        return await client.call(api.STATUS, StatusRequest())

    reply: StatusReply = run_client(call, nats_url)
    if json_out:
        print_json(reply)
        return
    console.print(
        f"controller {reply.controller_version}, tenants {', '.join(reply.tenants)}, "
        f"{reply.hosts} hosts"
    )
    if reply.replica:
        others = ", ".join(r + (" (leader)" if r == reply.leader else "") for r in reply.replicas)
        console.print(f"replica {reply.replica} answered; replicas: {others or 'none heard'}")
    for name, value in sorted(reply.counters.items()):
        console.print(f"  {name}: {value}")


def register(app: typer.Typer) -> None:
    app.command()(ps)
    app.command()(status)
