"""`fleet deploy`: options in, one progress line per host, one result line per host out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from controller.cli.client import ClientError, resolve_operator, resolve_settings
from controller.cli.common import NatsOpt, fail

if TYPE_CHECKING:
    from controller.deploy.plan import HostResult
    from controller.deploy.remote import Target

# controller.deploy.plan is imported by the command itself: it brings asyncssh, a third of a
# second that every other `fleet` command would pay at start-up.


def _print_result(result: HostResult, out: Console) -> None:
    from controller.deploy.plan import Outcome

    who = f"{result.target} ({result.host_id})" if result.host_id else str(result.target)
    if result.outcome is Outcome.FAILED:
        assert result.error is not None
        # Plain writes: remote output is shown as it came, never wrapped or styled.
        sys.stderr.write(f"fleet deploy: {who}: {result.error}\n")
        return
    detail = "; ".join(result.changes) if result.changes else "nothing to do"
    if result.outcome is Outcome.UNCHANGED:
        detail = "agent running, heartbeat seen"
    out.print(f"{who}: {result.outcome.value} ({detail}) in {result.seconds:.1f}s", soft_wrap=True)


def deploy(
    hosts: Annotated[list[str], typer.Argument(help="[USER@]HOST[:PORT], one or more")],
    tenant: Annotated[str, typer.Option(help="the tenant whose agent this is")],
    host_id: Annotated[
        str | None, typer.Option(help="host id (default: the host's hostname; one host only)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would change")] = False,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            help="NATS URL(s) the remote agent connects to, comma-separated "
            "(default: the servers this CLI uses)",
        ),
    ] = None,
    nats: NatsOpt = None,
    credentials: Annotated[
        Path | None, typer.Option(help="the host's NATS .creds file, installed 0600")
    ] = None,
    roster: Annotated[
        Path | None, typer.Option(help="TOML file whose sessions tables become the host's roster")
    ] = None,
    tmux_socket: Annotated[str, typer.Option(help="tmux socket (default fleet-<tenant>)")] = "",
    heartbeat_interval: Annotated[float, typer.Option(help="seconds between heartbeats")] = 5.0,
    run_as_user: Annotated[
        str | None,
        typer.Option(help="Linux user the sessions run as when the agent runs as root"),
    ] = None,
    allow_root: Annotated[
        bool,
        typer.Option("--allow-root", help="let a root agent run its sessions as root"),
    ] = False,
    systemd: Annotated[
        bool,
        typer.Option(
            "--systemd/--no-systemd",
            help="install fleet-agent@.service, or run the agent under a plain supervisor",
        ),
    ] = True,
    remote_dir: Annotated[
        str, typer.Option(help="deploy dir on the host (default ~/.local/share/agentfleet-agent/T)")
    ] = "",
    remote_python: Annotated[str, typer.Option(help="Python >= 3.11 on the host")] = "python3",
    ssh_key: Annotated[
        list[Path] | None, typer.Option("--ssh-key", help="private key file (repeatable)")
    ] = None,
    known_hosts: Annotated[
        Path | None, typer.Option(help="known_hosts file (default ~/.ssh/known_hosts)")
    ] = None,
    accept_new_host_key: Annotated[
        bool,
        typer.Option("--accept-new-host-key", help="trust an unknown host key on first use"),
    ] = False,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(help="deploy these prebuilt wheels instead of building the running version"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the first heartbeat")] = 60.0,
) -> None:
    """Install or update the host agent on hosts over SSH and wait for its heartbeat."""
    from controller.deploy.plan import DeployOptions, Outcome, deploy_all
    from controller.deploy.remote import SshOptions, Target

    if host_id and len(hosts) > 1:
        fail("--host-id names one host; deploy several hosts with their own hostnames")
    try:
        targets = [Target.parse(h) for h in hosts]
        controller = resolve_settings(nats)
        operator = resolve_operator(nats)
    except (ValueError, ClientError) as exc:
        fail(str(exc))
    opts = DeployOptions(
        tenant=tenant,
        host_id=host_id,
        agent_servers=[u.strip() for u in nats_url.split(",")] if nats_url else controller.servers,
        controller=controller,
        operator=operator,
        credentials=credentials,
        roster=roster,
        tmux_socket=tmux_socket,
        heartbeat_interval_s=heartbeat_interval,
        run_as_user=run_as_user,
        allow_root=allow_root,
        systemd=systemd,
        remote_dir=remote_dir,
        remote_python=remote_python,
        dry_run=dry_run,
        ssh=SshOptions(
            known_hosts=known_hosts,
            accept_new_host_key=accept_new_host_key,
            keys=tuple(ssh_key or ()),
        ),
        heartbeat_timeout_s=timeout,
        wheelhouse=wheelhouse,
    )
    out = Console(soft_wrap=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.fields[target]}", style="bold"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=(err := Console(stderr=True)),
        transient=True,
        disable=not err.is_terminal,  # logs and pipes get the result lines only
    )
    tasks: dict[Target, TaskID] = {}

    def report(target: Target, step: str, detail: str) -> None:
        progress.update(tasks[target], description=f"{step} {detail}".strip())

    with progress:
        for target in targets:
            tasks[target] = progress.add_task("waiting", target=str(target), total=None)
        results = anyio.run(deploy_all, targets, opts, report)
    for result in results:
        _print_result(result, out)
    if any(r.outcome is Outcome.FAILED for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(deploy)
