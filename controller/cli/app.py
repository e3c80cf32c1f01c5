"""`fleet`: the operator CLI and the controller daemon. Thin: parse, call, print."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
import typer
from rich.console import Console

from controller.cli.client import ClientError, ControllerClient, resolve_settings
from protocol.api import PsReply, PsRequest, PsRow, StatusReply, StatusRequest

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="agentfleet operator CLI",
)
controller_app = typer.Typer(no_args_is_help=True, help="the controller daemon")
app.add_typer(controller_app, name="controller")

console = Console()

NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats", envvar="FLEET_NATS_URL", help="NATS URL(s) of the fleet, comma-separated"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

# The CLI reports an unreachable controller within this bound, whatever the network does.
CLI_DEADLINE_S = 3.0


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(message: str, code: int = 2) -> None:
    # Plain write: one line, never wrapped to the terminal width.
    sys.stderr.write(f"fleet: {message}\n")
    raise typer.Exit(code)


def run_client(fn: Any, nats_url: str | None, deadline: float | None = CLI_DEADLINE_S) -> Any:
    async def main() -> Any:
        settings = resolve_settings(nats_url)
        with anyio.fail_after(deadline):
            async with ControllerClient(settings) as client:
                return await fn(client)

    try:
        return anyio.run(main)
    except BaseExceptionGroup as group:  # from a task group (watch, follow): one real cause
        first = _leaf(group)
        if isinstance(first, BrokenPipeError):
            raise typer.Exit(0) from None
        if isinstance(first, ClientError | ValueError):
            fail(str(first), getattr(first, "exit_code", 2))
        raise
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        raise typer.Exit(0) from None
    except ClientError as exc:
        fail(str(exc), exc.exit_code)
    except TimeoutError:
        fail(
            f"no answer from the controller at {','.join(resolve_settings(nats_url).servers)} "
            f"within {deadline or CLI_DEADLINE_S:.0f}s"
        )
    except ValueError as exc:  # a bad id or argument, caught before anything was sent
        fail(str(exc))


def _leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first


@app.command()
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
                    reply = await client.call("ps", page, PsReply)
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
                reply = await client.call(
                    "ps", msgspec.structs.replace(request, cursor=cursor), PsReply
                )
            rows.extend(reply.rows)
            counts = counts or reply.hosts_by_state
            cursor = reply.next_cursor
        return rows, counts

    from controller.cli.render import print_ps

    rows, counts = run_client(collect, nats_url, deadline=None)
    print_ps(console, rows, counts)


@app.command()
def status(json_out: JsonOpt = False, nats_url: NatsOpt = None) -> None:
    """The controller's version, tenants, host count and counters."""

    async def call(client: ControllerClient) -> StatusReply:
        return await client.call("status", StatusRequest(), StatusReply)

    reply: StatusReply = run_client(call, nats_url)
    if json_out:
        sys.stdout.write(msgspec.json.encode(reply).decode() + "\n")
        return
    console.print(
        f"controller {reply.controller_version}, tenants {', '.join(reply.tenants)}, "
        f"{reply.hosts} hosts"
    )
    for name, value in sorted(reply.counters.items()):
        console.print(f"  {name}: {value}")


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="where NATS, controller and agent keep files")
    ] = None,
    port: Annotated[int, typer.Option(help="NATS port (a free one if taken)")] = 4222,
    tenants: Annotated[
        str, typer.Option(help="tenants of the demo fleet, comma-separated")
    ] = "demo",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="no NATS auth: one shared account (not secure)")
    ] = False,
    host: Annotated[str | None, typer.Option(help="host id of the local agent")] = None,
    tmux_socket: Annotated[
        str | None, typer.Option(help="tmux socket of the demo sessions")
    ] = None,
    heartbeat_interval: Annotated[float, typer.Option(help="seconds between heartbeats")] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
) -> None:
    """Run everything locally: embedded NATS, the controller, and a demo host agent."""
    from controller.cli.up import UpOptions, run_up

    setup_logging(log_level)
    opts = UpOptions(
        data_dir=data_dir,
        port=port,
        tenants=tuple(t.strip() for t in tenants.split(",") if t.strip()),
        host=host,
        tmux_socket=tmux_socket,
        insecure=insecure,
        heartbeat_interval_s=heartbeat_interval,
    )
    anyio.run(run_up, opts)


@controller_app.command("run")
def controller_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="controller TOML config")],
    metrics_addr: Annotated[
        str | None, typer.Option("--metrics-addr", help="HOST:PORT to serve /metrics on")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
) -> None:
    """Run the controller daemon."""
    from controller.config import ConfigError, load
    from controller.daemon import Controller

    setup_logging(log_level)
    try:
        cfg = load(config)
    except ConfigError as exc:
        fail(str(exc))
    if metrics_addr:
        cfg = msgspec.structs.replace(cfg, metrics_addr=metrics_addr)
    tune_gc()
    anyio.run(Controller(cfg).serve)


def tune_gc() -> None:
    """Fewer cyclic-GC passes: fleet state is many long-lived objects and few cycles, and a
    full collection at 50,000 hosts costs a few hundred ms of a busy event loop."""
    import gc

    gc.set_threshold(50_000, 20, 100)


def main() -> None:
    from controller.cli import deploy as cli_deploy
    from controller.cli import report as cli_report
    from controller.cli import steer as cli_steer
    from controller.cli import tenancy as cli_tenancy
    from controller.cli.events import events_app, store_app

    app.add_typer(events_app, name="events")
    app.add_typer(store_app, name="store")
    for module in (cli_steer, cli_report, cli_deploy, cli_tenancy):
        module.register(app)
    app()
