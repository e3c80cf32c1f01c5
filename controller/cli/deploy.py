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
    from common.natsconn import NatsSettings
    from controller.deploy.plan import DeployOptions, HostResult
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


# The command's options, one alias each, so that the signature below reads as a list.
HostsArg = Annotated[list[str], typer.Argument(help="[USER@]HOST[:PORT], one or more")]
TenantOpt = Annotated[str, typer.Option(help="the tenant whose agent this is")]
HostIdOpt = Annotated[
    str | None, typer.Option(help="host id (default: the host's hostname; one host only)")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="show what would change")]
NatsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="NATS URL(s) the remote agent connects to, comma-separated "
        "(default: the servers this CLI uses)",
    ),
]
CredentialsOpt = Annotated[
    Path | None, typer.Option(help="the host's NATS .creds file, installed 0600")
]
RosterOpt = Annotated[
    Path | None, typer.Option(help="TOML file whose sessions tables become the host's roster")
]
TmuxSocketOpt = Annotated[str, typer.Option(help="tmux socket (default fleet-<tenant>)")]
HeartbeatOpt = Annotated[float, typer.Option(help="seconds between heartbeats")]
RunAsOpt = Annotated[
    str | None,
    typer.Option(help="Linux user the sessions run as when the agent runs as root"),
]
AllowRootOpt = Annotated[
    bool, typer.Option("--allow-root", help="let a root agent run its sessions as root")
]
SystemdOpt = Annotated[
    bool,
    typer.Option(
        "--systemd/--no-systemd",
        help="install fleet-agent@.service, or run the agent under a plain supervisor",
    ),
]
RemoteDirOpt = Annotated[
    str, typer.Option(help="deploy dir on the host (default ~/.local/share/agentfleet-agent/T)")
]
RemotePythonOpt = Annotated[str, typer.Option(help="Python >= 3.11 on the host")]
SshKeyOpt = Annotated[
    list[Path] | None, typer.Option("--ssh-key", help="private key file (repeatable)")
]
KnownHostsOpt = Annotated[
    Path | None, typer.Option(help="known_hosts file (default ~/.ssh/known_hosts)")
]
AcceptNewOpt = Annotated[
    bool, typer.Option("--accept-new-host-key", help="trust an unknown host key on first use")
]
WheelhouseOpt = Annotated[
    Path | None,
    typer.Option(help="deploy these prebuilt wheels instead of building the running version"),
]
TimeoutOpt = Annotated[float, typer.Option(help="seconds to wait for the first heartbeat")]


def deploy(
    hosts: HostsArg,
    tenant: TenantOpt,
    host_id: HostIdOpt = None,
    dry_run: DryRunOpt = False,
    nats_url: NatsUrlOpt = None,
    nats: NatsOpt = None,
    credentials: CredentialsOpt = None,
    roster: RosterOpt = None,
    tmux_socket: TmuxSocketOpt = "",
    heartbeat_interval: HeartbeatOpt = 5.0,
    run_as_user: RunAsOpt = None,
    allow_root: AllowRootOpt = False,
    systemd: SystemdOpt = True,
    remote_dir: RemoteDirOpt = "",
    remote_python: RemotePythonOpt = "python3",
    ssh_key: SshKeyOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_key: AcceptNewOpt = False,
    wheelhouse: WheelhouseOpt = None,
    timeout: TimeoutOpt = 60.0,
) -> None:
    """Install or update the host agent on hosts over SSH and wait for its heartbeat."""
    from controller.deploy.plan import DeployOptions, Outcome
    from controller.deploy.remote import SshOptions

    targets, controller, operator = _where(hosts, host_id, nats)
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
    results = _deploy_with_progress(targets, opts)
    for result in results:
        _print_result(result, out)
    if any(r.outcome is Outcome.FAILED for r in results):
        raise typer.Exit(1)


def _where(
    hosts: list[str], host_id: str | None, nats: str | None
) -> tuple[list[Target], NatsSettings, str | None]:
    """The targets, the controller's NATS settings and the operator, or one line and exit 2."""
    from controller.deploy.remote import Target

    if host_id and len(hosts) > 1:
        fail("--host-id names one host; deploy several hosts with their own hostnames")
    try:
        return [Target.parse(h) for h in hosts], resolve_settings(nats), resolve_operator(nats)
    except (ValueError, ClientError) as exc:
        fail(str(exc))


def _deploy_with_progress(targets: list[Target], opts: DeployOptions) -> list[HostResult]:
    """Deploy to every target, a spinner line per host on a terminal while it runs."""
    from controller.deploy.plan import deploy_all

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
        return anyio.run(deploy_all, targets, opts, report)


def register(app: typer.Typer) -> None:
    app.command()(deploy)
