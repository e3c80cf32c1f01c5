"""`fleet-agent`: the host agent daemon and the stub agent. Thin: parse, log, call one function."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer

from agent.config import ConfigError, load

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="agentfleet host agent",
)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="agent TOML config")],
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
) -> None:
    """Run the host agent: launch the roster, watch every pane, heartbeat to NATS."""
    from agent.daemon import HostAgent

    setup_logging(log_level)
    try:
        cfg = load(config)
    except ConfigError as exc:
        typer.echo(f"fleet-agent: {exc}", err=True)
        raise typer.Exit(2) from None
    anyio.run(HostAgent(cfg).serve)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def stub(ctx: typer.Context) -> None:
    """Run the stub agent (an interactive TTY program standing in for an AI agent)."""
    from agent.stub import main as stub_main

    raise typer.Exit(stub_main(list(ctx.args)))


def main() -> None:
    # `fleet-agent stub --help` must reach the stub's own parser, not typer's.
    if len(sys.argv) > 1 and sys.argv[1] == "stub":
        from agent.stub import main as stub_main

        sys.exit(stub_main(sys.argv[2:]))
    app()
