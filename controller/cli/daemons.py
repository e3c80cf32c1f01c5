"""`fleet up` and `fleet controller run`: the commands that run daemons, not talk to one.

What they run is imported when they run: the rest of the CLI does not pay for loading both
daemons.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import msgspec
import typer

from common.logs import setup_logging
from controller.cli.common import LogLevelOpt, fail

controller_app = typer.Typer(no_args_is_help=True, help="the controller daemon")


def up(
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config",
            "-c",
            help="agent.toml roster(s) to run, one per tenant (default: the one `fleet init` "
            "wrote, if any; else the demo)",
        ),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="run the demo fleet even if you have a roster")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="where NATS, controller and agent keep files")
    ] = None,
    port: Annotated[int, typer.Option(help="NATS port (a free one if taken, 0: any)")] = 4222,
    tenants: Annotated[
        str | None, typer.Option(help="tenants of the demo fleet, comma-separated [demo]")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="no NATS auth: one shared account (not secure)")
    ] = False,
    host: Annotated[str | None, typer.Option(help="host id of the local agent")] = None,
    tmux_socket: Annotated[
        str | None, typer.Option(help="tmux socket of the demo sessions")
    ] = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option(help="seconds between heartbeats [roster's; demo: 5]")
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run everything locally: embedded NATS, the controller, and a host agent per tenant
    running your roster (adopting its sessions) or, without one, the demo."""
    from controller.cli.up import UpError, UpOptions, run_up

    setup_logging(log_level)
    opts = UpOptions(
        configs=tuple(config or ()),
        demo=demo,
        data_dir=data_dir,
        port=port,
        tenants=None if tenants is None else tuple(t.strip() for t in tenants.split(",")),
        host=host,
        tmux_socket=tmux_socket,
        insecure=insecure,
        heartbeat_interval_s=heartbeat_interval,
    )
    try:
        anyio.run(run_up, opts)
    except UpError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # before the signal handlers are up (they turn Ctrl-C into a stop)
        fail("interrupted while starting; what had started is stopped", 130)


def controller_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="controller TOML config")],
    metrics_addr: Annotated[
        str | None, typer.Option("--metrics-addr", help="HOST:PORT to serve /metrics on")
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run the controller daemon."""
    from controller.config import ConfigError, load
    from controller.daemon import Controller, StartupError

    setup_logging(log_level)
    try:
        cfg = load(config)
    except ConfigError as exc:
        fail(str(exc))
    if metrics_addr:
        cfg = msgspec.structs.replace(cfg, metrics_addr=metrics_addr)
    tune_gc()
    try:
        anyio.run(Controller(cfg).serve)
    except StartupError as exc:  # metrics port taken, data_dir unusable: one line, exit 2
        fail(str(exc))


def tune_gc() -> None:
    """Fewer cyclic-GC passes: fleet state is many long-lived objects and few cycles, and a
    full collection at 50,000 hosts costs a few hundred ms of a busy event loop."""
    import gc

    gc.set_threshold(50_000, 20, 100)


def register(app: typer.Typer) -> None:
    app.command()(up)
    controller_app.command("run")(controller_run)
    app.add_typer(controller_app, name="controller")
