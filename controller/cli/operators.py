"""`fleet operator add|list|remove`: the people at the CLI, each with a key of their own.

Like `fleet host …`, these work on the controller's files (``<data dir>/tenancy/``). An
operator's key may publish only on `fleet.ctl.u.<name>.>`, so the controller knows who asks
from the subject; its role and tenants say what it may ask (docs/security.md, *Operators*).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import typer

from controller.cli.common import JsonOpt, fail
from controller.cli.tenancy import DataDirOpt, controller_dir, store_for
from controller.natsserver.accounts import TenancyError, reload_server
from controller.natsserver.config import cli_inbox
from protocol.api import Role
from protocol.ids import IdError

operator_app = typer.Typer(no_args_is_help=True, help="operators: people with their own keys")

PidFileOpt = Annotated[
    Path | None,
    typer.Option(help="pid file of the nats-server to reload (default: `fleet up`'s)"),
]


def _reload(data_dir: Path | None, pid_file: Path | None, done: str) -> None:
    path = pid_file or controller_dir(data_dir).parent / "nats" / "nats-server.pid"
    pid = reload_server(path)
    if pid is not None:
        print(f"{done}; nats-server (pid {pid}) reloaded")
    else:
        print(
            f"{done}; no nats-server found via {path}: regenerate its config "
            "(fleet nats-config) and reload it (nats-server --signal reload)"
        )


@operator_app.command("add")
def operator_add(
    name: str,
    role: Annotated[Role, typer.Option(help="viewer|operator|admin")] = Role.VIEWER,
    tenant: Annotated[
        list[str] | None, typer.Option("--tenant", help="a tenant it may use (repeat)")
    ] = None,
    nats_pid_file: PidFileOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an operator's key; prints the CLI context that person needs."""
    try:
        seed = store_for(data_dir).add_operator(name, role, list(tenant or []))
    except (TenancyError, IdError) as exc:
        fail(str(exc))
    scope = "every tenant" if role is Role.ADMIN else ", ".join(sorted(set(tenant or [])))
    print(f"# operator {name} ({role.value}; {scope}): copy {seed} to them (mode 0600) and put")
    print("# these lines, with the fleet's `servers`, in their context file")
    print("# (<user config dir>/agentfleet/context.toml, or $FLEET_CONTEXT)")
    print("[nats]")
    print(f"nkey_seed = {msgspec.json.encode(str(seed)).decode()}")
    print(f'inbox_prefix = "{cli_inbox(name)}"')
    print("[operator]")
    print(f'name = "{name}"')
    _reload(data_dir, nats_pid_file, f"# operator {name} added")


@operator_app.command("list")
def operator_list(json_out: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Every operator with its role, tenants and public key."""
    try:
        registry = store_for(data_dir).load()
    except TenancyError as exc:
        fail(str(exc))
    rows = [
        {"operator": n, "role": r.role.value, "tenants": r.tenants, "public_key": r.public_key}
        for n, r in sorted(registry.operators.items())
    ]
    if json_out:
        print(msgspec.json.encode(rows).decode())
        return
    for row in rows:
        tenants = ",".join(row["tenants"]) or ("*" if row["role"] == "admin" else "-")
        print(f"{row['operator']}\t{row['role']}\ttenants={tenants}\t{row['public_key']}")


@operator_app.command("remove")
def operator_remove(
    name: str, nats_pid_file: PidFileOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Revoke an operator: delete its key and reload the server so it stops working."""
    try:
        store_for(data_dir).remove_operator(name)
    except (TenancyError, IdError) as exc:
        fail(str(exc))
    _reload(data_dir, nats_pid_file, f"operator {name} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(operator_app, name="operator")
