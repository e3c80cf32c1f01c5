"""`fleet-agent`: the host agent daemon and the stub agent. Thin: parse, log, call one function."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer

from agent.config import AgentConfig, load
from agent.uid import Decision, UidError, resolve, session_identity
from common.config import ConfigError
from common.logs import setup_logging

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="agentfleet host agent",
)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="agent TOML config")],
    allow_root: Annotated[
        bool, typer.Option("--allow-root", help="run sessions as root when no user is set")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
) -> None:
    """Run the host agent: launch the roster, watch every pane, heartbeat to NATS."""
    from agent.daemon import HostAgent

    setup_logging(log_level)
    try:
        cfg = load(config)
        decision = session_identity_for(cfg, allow_root or cfg.allow_root)
    except (ConfigError, UidError) as exc:
        typer.echo(f"fleet-agent: {exc}", err=True)
        raise typer.Exit(2) from None
    if decision.warning:
        logging.getLogger("agent").warning(decision.warning)
    anyio.run(HostAgent(cfg, run_as=decision.run_as).serve)


def session_identity_for(cfg: AgentConfig, allow_root: bool) -> Decision:
    """Who this agent's sessions run as (agent/uid.py has the rules)."""
    user = resolve(cfg.run_as_user) if cfg.run_as_user else None
    return session_identity(os.geteuid(), cfg.tenant, user, allow_root)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def stub(ctx: typer.Context) -> None:
    """Run the stub agent (an interactive TTY program standing in for an AI agent)."""
    from agent.stub.app import main as stub_main

    raise typer.Exit(stub_main(list(ctx.args)))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def hook(ctx: typer.Context) -> None:
    """Hand a runtime hook's JSON (stdin, or the last argument) to the running host agent:
    [--spool FILE] [--runtime NAME] [--session NAME] [PAYLOAD]. Always exits 0, silently."""
    from agent.hooks.send import deliver

    raise typer.Exit(deliver(list(ctx.args)))


def main() -> None:
    # `fleet-agent stub --help` must reach the stub's own parser, not typer's.
    if len(sys.argv) > 1 and sys.argv[1] == "stub":
        from agent.stub.app import main as stub_main

        sys.exit(stub_main(sys.argv[2:]))
    app()
