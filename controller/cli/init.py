"""`fleet init`: adopt what already runs. It shows what controller.cli.discover found and
proposes an agent roster that takes those sessions as they are.

Nothing is started, typed into, restarted or killed; the only thing it writes is the roster.
"""

from __future__ import annotations

import os
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Annotated

import anyio
import msgspec
import platformdirs
import typer
from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table

from agent.config import AgentConfig, SessionSpec, dump, validate
from agent.discovery.runtimes import RuntimeSpecError, load_runtimes
from common.config import ConfigError
from controller.cli.common import JsonOpt, fail, print_json
from controller.cli.discover import Server, discover, socket_dir
from protocol.ids import IdError, validate_tenant


def choose(servers: list[Server], only: str | None) -> Server:
    live = [s for s in servers if s.adoptable]
    if only is not None and not live:  # the one server asked for
        fail(f"tmux socket {only}: {servers[0].note or 'no session that can be adopted'}", 1)
    if not live:
        fail(f"no tmux session to adopt in {socket_dir()}", 1)
    if len(live) > 1:
        names = ", ".join(s.socket for s in live)
        fail(f"{len(live)} tmux servers have sessions ({names}): choose one with --socket NAME")
    return live[0]


def default_tenant(socket: str) -> str:
    """The agent's default socket is fleet-<tenant>; any other name is the tenant itself."""
    tenant = socket.removeprefix("fleet-") or socket
    try:
        return validate_tenant(tenant)
    except IdError as exc:
        fail(f"socket {socket!r} cannot name a tenant ({exc}): pass --tenant NAME")


def propose(server: Server, tenant: str, runtimes_dir: Path | None) -> AgentConfig:
    sessions = [
        SessionSpec(name=s.name, runtime=s.runtime, command=s.command, cwd=s.cwd or None, env=s.env)
        for s in server.adoptable
    ]
    # Sessions of root already run as root: adopting them as they are means allowing it.
    config = AgentConfig(
        tenant=tenant,
        tmux_socket=server.socket,
        allow_root=os.geteuid() == 0,
        runtimes_dir=str(runtimes_dir.resolve()) if runtimes_dir else None,
        sessions=sessions,
    )
    try:
        return validate(config)
    except ConfigError as exc:
        fail(str(exc))


def render(config: AgentConfig, server: Server) -> str:
    head = (
        f"# Written by `fleet init`: adopts the {len(config.sessions)} session(s) running on\n"
        f"# tmux socket {server.socket!r} as they are. Run it with: fleet-agent run --config FILE\n"
    )
    text = head + dump(config)
    # What we write must be what the agent's loader reads back, or nothing is written.
    try:
        back = validate(msgspec.convert(tomllib.loads(text), AgentConfig))
    except (tomllib.TOMLDecodeError, msgspec.ValidationError, ConfigError) as exc:
        fail(f"the proposed roster does not load back ({exc}); nothing written", 1)
    if back != config:
        fail("the proposed roster does not load back as proposed; nothing written", 1)
    return text


def show(servers: list[Server], console: Console) -> None:
    table = Table("SOCKET", "SESSION", "RUNTIME", "PID", "CWD", "COMMAND", "ROSTER")
    stale = [s.socket for s in servers if s.note and s.note.startswith("stale")]
    for server in servers:
        if server.note and server.socket not in stale:
            table.add_row(esc(server.socket), "", "", "", "", "", f"[dim]{esc(server.note)}[/dim]")
        for s in server.sessions:
            runtime = s.runtime if s.known else f"{s.runtime} (no rules)"
            command = s.command if isinstance(s.command, str) else shlex.join(s.command or [])
            verdict = "adopt" if s.skipped is None else f"[yellow]skip: {esc(s.skipped)}[/yellow]"
            # Names, paths and commands are the user's: never read as rich markup.
            cells = (server.socket, s.name, runtime, str(s.pid or ""), s.cwd, command or "-")
            table.add_row(*map(esc, cells), verdict)
    console.print(table)
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        console.print(f"skipped {len(stale)} stale tmux socket file(s) (server gone): {shown}")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a reader never sees half a roster


def init(
    socket: Annotated[
        str | None, typer.Option("--socket", help="the tmux socket (-L NAME) to adopt")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="tenant of the roster (default: from the socket name)")
    ] = None,
    print_: Annotated[
        bool, typer.Option("--print", help="print the roster to stdout, write nothing")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="write without asking")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing roster")] = False,
    config_dir: Annotated[
        Path | None, typer.Option(help="where to write agent.toml (default: user config dir)")
    ] = None,
    runtimes_dir: Annotated[
        Path | None, typer.Option(help="extra runtime specs (*.toml), as the agent's")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Find the tmux sessions running for you and propose a roster that adopts them as they
    are (read-only: nothing is restarted, typed into or killed). Sockets: $TMUX_TMPDIR."""
    try:
        specs = load_runtimes(runtimes_dir)
        servers = anyio.run(discover, socket_dir(), socket, specs)
    except (RuntimeSpecError, ValueError) as exc:
        fail(str(exc))
    if json_out:
        print_json({"socket_dir": str(socket_dir()), "servers": servers})
        return
    show(servers, Console(stderr=print_))
    server = choose(servers, socket)
    config = propose(server, tenant or default_tenant(server.socket), runtimes_dir)
    text = render(config, server)
    if print_:
        sys.stdout.write(text)
        return
    path = (config_dir or Path(platformdirs.user_config_dir("agentfleet"))) / "agent.toml"
    if path.exists() and not force:
        fail(f"{path} exists: pass --force to overwrite it", 1)
    if not yes:
        if not sys.stdin.isatty():
            fail("stdin is not a terminal, so nothing was asked: pass --yes to write the roster")
        if not typer.confirm(f"Write this roster ({len(config.sessions)} sessions) to {path}?"):
            fail("nothing written", 1)
    write(path, text)
    print(
        f"wrote {path}: tenant {config.tenant}, socket {config.tmux_socket}, "
        f"{len(config.sessions)} session(s); run it with: fleet-agent run --config {path}"
    )


def register(app: typer.Typer) -> None:
    app.command("init")(init)
