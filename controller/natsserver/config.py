"""Render a nats-server config from the tenancy registry: one account per tenant, a CONTROL
account for the controller API, a system account, and least-privilege nkey users.

Accounts isolate subjects completely: a connection in ``TENANT_acme`` cannot name anything
in ``TENANT_globex``, whatever its permissions say. Inside an account, permissions keep each
host to its own subjects, and each operator to its own API prefix (``fleet.ctl.u.<name>.>``:
the controller takes who asks from that token). Every user gets a private inbox prefix
(``_INBOX.host.<host>``, ``_INBOX.controller``, ``_INBOX.cli.<name>``) instead of the shared
``_INBOX.>``, so no one can read another client's replies or JetStream acks; clients must
connect with that ``inbox_prefix``.

Only public keys appear here: the rendered config is not a secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import msgspec

from controller.natsserver.accounts import Registry
from protocol import subjects
from protocol.events import CONTROLLER_ONLY_TYPES
from protocol.ids import validate_host, validate_id

SYSTEM_ACCOUNT = "SYS"
CONTROL_ACCOUNT = "CONTROL"
DEFAULT_MAX_PAYLOAD = 1024 * 1024


class JetStreamLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Per tenant account: what its streams and consumers may use, in total."""

    max_mem: int = 64 * 1024 * 1024
    max_file: int = 10 * 1024 * 1024 * 1024
    max_streams: int = 4
    max_consumers: int = 64


class TlsOptions(msgspec.Struct, frozen=True, kw_only=True):
    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify: bool = False  # require client certificates signed by ca_file
    timeout_s: float = 2.0


# -- inbox prefixes (clients must connect with these) ------------------------------------------
def host_inbox(host: str) -> str:
    return f"_INBOX.host.{validate_host(host)}"


def controller_inbox() -> str:
    return "_INBOX.controller"


def cli_inbox(name: str) -> str:
    """The inbox of operator ``name``'s CLI."""
    return f"_INBOX.cli.{validate_id(name, 'operator')}"


def tenant_account(tenant: str) -> str:
    return f"TENANT_{tenant}"


# -- permissions ---------------------------------------------------------------------------------
class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    publish: list[str]
    subscribe: list[str]
    allow_responses: bool = False
    publish_deny: list[str] = []  # carved out of ``publish``


def host_permissions(tenant: str, host: str) -> Permissions:
    """Publish its own hb/lc/evt/out, receive its own commands and its own replies.

    JetStream publishing needs no ``$JS.API`` rights: a publish to a stream subject with a
    reply subject gets its ack on that reply subject, which lies in the host's inbox.
    """
    return Permissions(
        publish=[
            subjects.heartbeat(tenant, host),
            subjects.lifecycle(tenant, host),
            subjects.host_events(tenant, host),
            subjects.host_outputs(tenant, host),
        ],
        subscribe=[subjects.command(tenant, host), f"{host_inbox(host)}.>"],
        allow_responses=True,  # answer the controller's command requests, once each
        # Its own event subjects, but not the types only a controller records (an ack
        # replayed by every replica would otherwise be a host speaking for an operator).
        publish_deny=[
            _any_session(subjects.event(tenant, host, "x", t)) for t in CONTROLLER_ONLY_TYPES
        ],
    )


def _any_session(subject: str) -> str:
    """An event subject with the session token (always the 5th) as ``*``."""
    tokens = subject.split(".")
    tokens[4] = "*"
    return ".".join(tokens)


def _any_host(subject: str) -> str:
    """A subject built for one host, with the host token (always the 4th) as ``*``.

    Built from a real subject so that the layout stays defined in protocol/subjects.py alone.
    """
    tokens = subject.split(".")
    tokens[3] = "*"
    return ".".join(tokens)


def tenant_controller_permissions(tenant: str, stream: str) -> Permissions:
    """The controller inside one tenant account: intake, commands, its stream and consumer."""
    return Permissions(
        publish=[
            _any_host(subjects.command(tenant, "x")),
            subjects.all_events(tenant),  # synthesized events go into the same stream
            "$JS.API.>",  # stream and consumer management, fetches, in this account only
            f"$JS.ACK.{stream}.>",
        ],
        subscribe=[
            subjects.all_heartbeats(tenant),
            subjects.all_lifecycles(tenant),
            subjects.all_events(tenant),
            _any_host(subjects.host_outputs(tenant, "x")),
            f"{controller_inbox()}.>",
        ],
    )


def control_controller_permissions() -> Permissions:
    return Permissions(
        publish=[f"{cli_inbox('x').rsplit('.', 1)[0]}.>"],  # replies, also streamed ones
        subscribe=[subjects.controller_api_all()],
        allow_responses=True,
    )


def operator_permissions(name: str) -> Permissions:
    """Ask the API under its own name only, read its own replies only: that the broker
    enforces both is what makes the subject's name token an identity."""
    return Permissions(
        publish=[subjects.operator_api_all(name)], subscribe=[f"{cli_inbox(name)}.>"]
    )


# -- rendering -----------------------------------------------------------------------------------
def _q(value: str) -> str:
    return json.dumps(value)  # the nats config format reads JSON strings


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def _user(public_key: str, perms: Permissions | None, comment: str) -> str:
    if perms is None:
        return f"      {{ nkey: {_q(public_key)} }}  # {comment}"
    responses = "\n          allow_responses: true" if perms.allow_responses else ""
    deny = f", deny: {_list(perms.publish_deny)}" if perms.publish_deny else ""
    return (
        f"      {{  # {comment}\n"
        f"        nkey: {_q(public_key)}\n"
        f"        permissions: {{\n"
        f"          publish: {{ allow: {_list(perms.publish)}{deny} }}\n"
        f"          subscribe: {{ allow: {_list(perms.subscribe)} }}{responses}\n"
        f"        }}\n"
        f"      }}"
    )


def _account(name: str, users: list[str], extra: str = "") -> str:
    body = ("    " + extra + "\n") if extra else ""
    return f"  {_q(name)}: {{\n{body}    users: [\n" + "\n".join(users) + "\n    ]\n  }"


def render_accounts(registry: Registry, limits: JetStreamLimits | None = None) -> str:
    """The accounts block and system_account: everything about who may do what."""
    limits = limits or JetStreamLimits()
    js = (
        f"jetstream: {{ max_mem: {limits.max_mem}, max_file: {limits.max_file}, "
        f"max_streams: {limits.max_streams}, max_consumers: {limits.max_consumers} }}"
    )
    blocks = [
        _account(SYSTEM_ACCOUNT, [_user(registry.system_key, None, "system user")]),
        _account(
            CONTROL_ACCOUNT,
            [_user(registry.control_controller_key, control_controller_permissions(), "controller")]
            + [
                _user(
                    op.public_key, operator_permissions(name), f"operator {name} ({op.role.value})"
                )
                for name, op in sorted(registry.operators.items())
            ],
        ),
    ]
    for tenant, record in sorted(registry.tenants.items()):
        stream = subjects.event_stream_name(tenant)
        users = [
            _user(
                record.controller_key, tenant_controller_permissions(tenant, stream), "controller"
            )
        ] + [
            _user(h.public_key, host_permissions(tenant, host), f"host {host}")
            for host, h in sorted(record.hosts.items())
        ]
        blocks.append(_account(tenant_account(tenant), users, js))
    return (
        "# generated by agentfleet from the tenancy registry; edits are overwritten\n"
        f"system_account: {_q(SYSTEM_ACCOUNT)}\n"
        "accounts {\n" + "\n".join(blocks) + "\n}\n"
    )


def render_tls(tls: TlsOptions) -> str:
    lines = [f"  cert_file: {_q(tls.cert_file)}", f"  key_file: {_q(tls.key_file)}"]
    if tls.ca_file:
        lines.append(f"  ca_file: {_q(tls.ca_file)}")
    if tls.verify:
        lines.append("  verify: true")
    lines.append(f"  timeout: {tls.timeout_s}")
    return "tls {\n" + "\n".join(lines) + "\n}\n"


def render_server(
    registry: Registry,
    *,
    listen: str = "0.0.0.0:4222",
    store_dir: str | Path = "/var/lib/agentfleet/nats/jetstream",
    server_name: str = "fleet",
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    limits: JetStreamLimits | None = None,
    tls: TlsOptions | None = None,
) -> str:
    """A complete, standalone nats-server config (what `fleet nats-config` prints)."""
    head = [
        f"server_name: {_q(server_name)}",
        f"listen: {_q(listen)}",
        f"max_payload: {max_payload}",
        # The controller reads the whole fleet's heartbeats on one connection (benchmarks).
        f"max_pending: {256 * 1024 * 1024}",
        # Long subjects are hostile input too: bound the protocol line.
        "max_control_line: 4096",
        f"jetstream {{ store_dir: {_q(str(store_dir))} }}",
    ]
    text = "\n".join(head) + "\n"
    if tls is not None:
        text += render_tls(tls)
    return text + render_accounts(registry, limits)


def include_directive(config_file: Path, auth_conf: Path) -> str:
    """An ``include`` of the store's auth.conf, for a config living at ``config_file``.

    nats-server resolves includes relative to the including file; the store rewrites
    auth.conf on every change, so a SIGHUP is all a revocation needs.
    """
    import os

    rel = os.path.relpath(auth_conf.resolve(), config_file.resolve().parent)
    return f"include {_q(rel)}\n"
