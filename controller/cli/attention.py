"""`fleet attention`: what needs a human, most severe and newest first; ack and snooze."""

from __future__ import annotations

import getpass
import os
import re
import time
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table

from controller.cli.client import ControllerClient
from controller.cli.common import JsonOpt, NatsOpt, console, fail, print_json, run_client
from controller.cli.render import age
from protocol import api
from protocol.attention import (
    AttentionAction,
    AttentionActReply,
    AttentionActRequest,
    AttentionItem,
    AttentionListReply,
    AttentionListRequest,
    ItemState,
)

attention_app = typer.Typer(
    invoke_without_command=True,
    help="what needs a human: blocked dialogs, operator actions, risks, stuck, dead, drift, "
    "hosts down",
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 60, "s": 1, "m": 60, "h": 3600, "d": 86400}  # a bare number is minutes
_SEVERITY_STYLE = {"critical": "bold red", "error": "red", "warning": "yellow"}


def parse_duration(value: str) -> float:
    m = _DURATION.match(value.strip())
    if not m:
        raise typer.BadParameter(f"{value!r} is not a duration: use 30m, 2h, 1d or 90s")
    return float(m.group(1)) * _UNITS[m.group(2)]


def who() -> str:
    return os.environ.get("FLEET_OPERATOR") or getpass.getuser()


def where(item: AttentionItem) -> str:
    return f"{item.tenant}/{item.host}" + (f"/{item.session}" if item.session else "")


def attention_table(items: Iterable[AttentionItem], now: float, wide: bool = True) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["ID", "SEV", "KIND", "WHERE", "SINCE", "WHY"] + (["STATE"] if wide else [])
    for col in columns:
        # The live view keeps one line per item; the listing wraps the reason.
        table.add_column(col, no_wrap=col != "WHY" or not wide, overflow="ellipsis")
    for item in items:
        sev = item.severity.value
        style = _SEVERITY_STYLE.get(sev, "")
        cells = [
            item.id,
            f"[{style}]{sev}[/]" if style else sev,
            item.kind.value,
            where(item),
            age(max(0.0, now - item.since)),
            item.why,
        ]
        if wide:
            state = item.state.value
            if item.state is ItemState.RESOLVED and item.resolution:
                state += f": {item.resolution}"
            elif item.state is ItemState.SNOOZED and item.snoozed_until:
                state += f" {age(max(0.0, item.snoozed_until - now))}"
            elif item.state is ItemState.ACKED and item.acked_by:
                state += f" by {item.acked_by}"
            cells.append(state)
        table.add_row(*cells)
    return table


@attention_app.callback()
def attention(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    host: Annotated[str | None, typer.Option(help="only this host")] = None,
    all_items: Annotated[
        bool, typer.Option("--all", help="also acked, snoozed and recently resolved items")
    ] = False,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """List what needs a human (`ack ID`, `snooze ID 30m` to act on an item)."""
    if ctx.invoked_subcommand is not None:
        return
    request = AttentionListRequest(tenant=tenant, host=host, include_all=all_items)

    async def call(client: ControllerClient) -> AttentionListReply:
        return await client.call(api.ATTENTION_LIST, request)

    reply: AttentionListReply = run_client(call, nats_url)
    if json_out:
        print_json(reply)
        return
    if reply.items:
        console.print(attention_table(reply.items, reply.generated_at or time.time()))
    console.print(f"\n{reply.open} open" + (f", {len(reply.items)} listed" if all_items else ""))


TenantOpt = Annotated[
    str | None, typer.Option(help="the item's tenant (an operator of several tenants names it)")
]


def _act(
    item_id: str,
    action: AttentionAction,
    snooze_s: float,
    tenant: str | None,
    json_out: bool,
    url: str | None,
) -> None:
    request = AttentionActRequest(
        id=item_id, tenant=tenant, action=action, snooze_s=snooze_s, by=who()
    )

    async def call(client: ControllerClient) -> AttentionActReply:
        return await client.call(api.ATTENTION_ACT, request)

    reply: AttentionActReply = run_client(call, url)
    if json_out:
        print_json(reply)
        return
    item = reply.item
    if item.state is ItemState.RESOLVED:
        fail(f"{item.id} is already resolved ({item.resolution})", 1)
    console.print(f"{item.id} {item.state.value}: {item.why} ({where(item)})")


@attention_app.command()
def ack(
    item_id: Annotated[str, typer.Argument(metavar="ID")],
    tenant: TenantOpt = None,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Mark an item seen: it leaves the list and stays until its condition ends."""
    _act(item_id, AttentionAction.ACK, 0.0, tenant, json_out, nats_url)


@attention_app.command()
def snooze(
    item_id: Annotated[str, typer.Argument(metavar="ID")],
    duration: Annotated[str, typer.Argument(help="30m, 2h, 1d, 90s (a bare number: minutes)")],
    tenant: TenantOpt = None,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Hide an item for a while; it comes back if its condition still holds."""
    _act(item_id, AttentionAction.SNOOZE, parse_duration(duration), tenant, json_out, nats_url)


def register(app: typer.Typer) -> None:
    app.add_typer(attention_app, name="attention")
