"""`fleet tenant …`, `fleet host …`, `fleet nats-config`: credentials and the server config.

These commands work on the controller's files directly (``<data dir>/tenancy/``), not over
NATS: they are how the NATS credentials come to exist in the first place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from controller.cli.common import JsonOpt, fail
from controller.config import default_data_dir
from controller.natsserver.accounts import TenancyError, TenancyStore, reload_server
from controller.natsserver.config import JetStreamLimits, TlsOptions, host_inbox, render_server
from protocol.ids import IdError, validate_host, validate_tenant

tenant_app = typer.Typer(no_args_is_help=True, help="tenants: one NATS account each")
host_app = typer.Typer(no_args_is_help=True, help="host credentials inside a tenant")

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="FLEET_CONTROLLER_DIR",
        help="the controller's data dir (default: <user data dir>/agentfleet/controller)",
    ),
]


def controller_dir(data_dir: Path | None) -> Path:
    return data_dir.expanduser() if data_dir else default_data_dir() / "controller"


def store_for(data_dir: Path | None) -> TenancyStore:
    return TenancyStore(controller_dir(data_dir) / "tenancy")


def parse_tenant_host(value: str) -> tuple[str, str]:
    tenant, sep, host = value.partition("/")
    if not sep:
        raise IdError("host", value, "must be given as TENANT/HOST")
    return validate_tenant(tenant), validate_host(host)


@tenant_app.command("add")
def tenant_add(
    name: str,
    linux_user: Annotated[
        str | None, typer.Option(help="Linux user whose uid this tenant's sessions run as")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a tenant: its NATS account and the controller's identity in it."""
    store = store_for(data_dir)
    try:
        store.add_tenant(name, linux_user=linux_user)
    except (TenancyError, IdError) as exc:
        fail(str(exc))
    print(f"tenant {name} added (account TENANT_{name}); regenerate the server config and reload")


@tenant_app.command("list")
def tenant_list(json_out: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Every tenant with its Linux user and host count."""
    try:
        registry = store_for(data_dir).load()
    except TenancyError as exc:
        fail(str(exc))
    rows = [
        {"tenant": t, "linux_user": r.linux_user, "hosts": len(r.hosts)}
        for t, r in sorted(registry.tenants.items())
    ]
    if json_out:
        print(msgspec.json.encode(rows).decode())
        return
    for row in rows:
        print(f"{row['tenant']}\tuser={row['linux_user'] or '-'}\thosts={row['hosts']}")


@host_app.command("add")
def host_add(
    target: Annotated[str, typer.Argument(help="TENANT/HOST")], data_dir: DataDirOpt = None
) -> None:
    """Create a host's credentials; prints the [nats] settings its agent needs."""
    try:
        tenant, host = parse_tenant_host(target)
        seed = store_for(data_dir).add_host(tenant, host)
    except (TenancyError, IdError) as exc:
        fail(str(exc))
    print(f"# credentials of {tenant}/{host}: copy {seed} to the host (mode 0600)")
    print("[nats]")
    print(f"nkey_seed = {msgspec.json.encode(str(seed)).decode()}")
    print(f'inbox_prefix = "{host_inbox(host)}"')


@host_app.command("remove")
def host_remove(
    target: Annotated[str, typer.Argument(help="TENANT/HOST")],
    nats_pid_file: Annotated[
        Path | None,
        typer.Option(help="pid file of the nats-server to reload (default: `fleet up`'s)"),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a host: delete its credentials and reload the server so they stop working."""
    try:
        tenant, host = parse_tenant_host(target)
        store = store_for(data_dir)
        store.remove_host(tenant, host)
    except (TenancyError, IdError) as exc:
        fail(str(exc))
    pid_file = nats_pid_file or controller_dir(data_dir).parent / "nats" / "nats-server.pid"
    pid = reload_server(pid_file)
    if pid is not None:
        print(f"host {tenant}/{host} revoked; nats-server (pid {pid}) reloaded")
    else:
        print(
            f"host {tenant}/{host} revoked; no nats-server found via {pid_file}: regenerate "
            "its config (fleet nats-config) and reload it (nats-server --signal reload)"
        )


@host_app.command("list")
def host_list(
    tenant: Annotated[str | None, typer.Argument(help="only this tenant")] = None,
    json_out: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Every host with credentials, per tenant."""
    try:
        registry = store_for(data_dir).load()
    except TenancyError as exc:
        fail(str(exc))
    rows = [
        {"tenant": t, "host": h, "public_key": rec.public_key}
        for t, r in sorted(registry.tenants.items())
        if tenant in (None, t)
        for h, rec in sorted(r.hosts.items())
    ]
    if json_out:
        print(msgspec.json.encode(rows).decode())
        return
    for row in rows:
        print(f"{row['tenant']}/{row['host']}\t{row['public_key']}")


def nats_config(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here")] = None,
    listen: Annotated[str, typer.Option(help="host:port to listen on")] = "0.0.0.0:4222",
    store_dir: Annotated[
        str, typer.Option(help="JetStream store dir")
    ] = "/var/lib/agentfleet/nats/jetstream",
    max_file: Annotated[
        int, typer.Option(help="JetStream file bytes per tenant")
    ] = JetStreamLimits().max_file,
    tls_cert: Annotated[Path | None, typer.Option(help="server certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="server key (PEM)")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA for client certificates")] = None,
    tls_verify: Annotated[
        bool, typer.Option(help="require client certificates signed by --tls-ca")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Render the nats-server config: one account per tenant, least-privilege users."""
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if tls_verify and tls_ca is None:
        fail("--tls-verify needs --tls-ca")
    tls = None
    if tls_cert is not None and tls_key is not None:
        tls = TlsOptions(
            cert_file=str(tls_cert.resolve()),
            key_file=str(tls_key.resolve()),
            ca_file=str(tls_ca.resolve()) if tls_ca else None,
            verify=tls_verify,
        )
    try:
        registry = store_for(data_dir).init()
    except TenancyError as exc:
        fail(str(exc))
    text = render_server(
        registry,
        listen=listen,
        store_dir=store_dir,
        limits=JetStreamLimits(max_file=max_file),
        tls=tls,
    )
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    output.chmod(0o600)
    print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(host_app, name="host")
    app.command("nats-config")(nats_config)
