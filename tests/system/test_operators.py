"""Operators with their own keys (issue 15, item 2), against a real nats-server running the
generated config, a real controller and host agents: the identity is the subject's name token
the broker lets only that key publish, never the body's claim; roles and tenants bound what
each operator may ask; a removed operator is cut off at the reload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from agent.config import AgentConfig, SessionSpec, dump
from common.natsconn import NatsSettings
from controller.api.access import Access, Caller, admit
from controller.cli.client import write_context
from controller.config import ControllerConfig
from controller.config import dump as dump_controller
from controller.natsserver.accounts import TenancyStore
from controller.natsserver.config import cli_inbox, controller_inbox, host_inbox, include_directive
from controller.natsserver.embedded import EmbeddedNats
from protocol import api, decode, encode, subjects
from protocol.api import ApiError, ErrorCode, PsRequest, Role
from protocol.commands import CommandRequest, CommandResult, Outcome, Release, Send, Takeover
from protocol.events_api import RebuildRequest
from tests.support.fleet import BIN, Proc, wait_for

# name -> (role, tenants)
OPERATORS = {
    "root": (Role.ADMIN, []),
    "alice": (Role.OPERATOR, ["acme"]),
    "bob": (Role.OPERATOR, ["acme"]),
    "vera": (Role.VIEWER, ["acme"]),
    "gina": (Role.OPERATOR, ["globex"]),
}
HOSTS = {"acme": "h1", "globex": "g1"}


@dataclass
class Secured:
    root: Path
    store: TenancyStore
    server: EmbeddedNats

    @property
    def data_dir(self) -> Path:
        return self.root / "controller"

    def context(self, name: str) -> Path:
        path = self.root / "contexts" / f"{name}.toml"
        if not path.exists():
            settings = NatsSettings(
                servers=[self.server.url],
                nkey_seed=str(self.store.operator_seed(name)),
                inbox_prefix=cli_inbox(name),
            )
            write_context(settings, path, operator=name)
        return path

    def cli(self, who: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if k != "FLEET_NATS_URL"}
        return subprocess.run(
            [str(BIN / "fleet"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**base, "FLEET_CONTEXT": str(self.context(who)), "COLUMNS": "200", **env},
        )

    def cli_json(self, who: str, *args: str, **env: str) -> tuple[int, Any]:
        result = self.cli(who, *args, "--json", **env)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def events(self, *args: str) -> list[dict[str, Any]]:
        result = self.cli("root", "events", "search", "--tenant", "acme", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]


def _stub(name: str) -> SessionSpec:
    return SessionSpec(name=name, runtime="stub", env={"FLEET_STUB_WORK_SECONDS": "0.2"})


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("operators")
    store = TenancyStore(root / "controller" / "tenancy")
    for tenant, host in HOSTS.items():
        store.add_tenant(tenant)
        store.add_host(tenant, host)
    for name, (role, tenants) in OPERATORS.items():
        store.add_operator(name, role, tenants)
    server = EmbeddedNats(root / "nats")
    server.extra_config = include_directive(server.config_path, store.auth_conf_path)
    server.start()
    fleet = Secured(root, store, server)
    socket = f"fleet-ops-{uuid.uuid4().hex[:8]}"
    procs: list[Proc] = []
    try:
        procs.append(_controller(fleet))
        for tenant, host in HOSTS.items():
            procs.append(_agent(fleet, tenant, host, f"{socket}-{tenant}"))

        def both_listed() -> bool:
            result = fleet.cli("root", "ps", "--json")
            return result.returncode == 0 and len(json.loads(result.stdout)) >= 2

        wait_for(both_listed, timeout=30, what="both hosts' sessions listed")
        yield fleet
    finally:
        for proc in reversed(procs):
            proc.stop()
        for tenant in HOSTS:
            subprocess.run(["tmux", "-L", f"{socket}-{tenant}", "kill-server"], check=False)
        server.stop()


def _controller(fleet: Secured) -> Proc:
    url, store = fleet.server.url, fleet.store
    config = ControllerConfig(
        tenants=list(HOSTS),
        nats=NatsSettings(
            servers=[url],
            nkey_seed=str(store.control_controller_seed()),
            inbox_prefix=controller_inbox(),
        ),
        tenant_nats={
            t: NatsSettings(
                servers=[url],
                nkey_seed=str(store.tenant_controller_seed(t)),
                inbox_prefix=controller_inbox(),
            )
            for t in HOSTS
        },
        data_dir=str(fleet.data_dir),
        liveness_tick_s=0.1,
    )
    path = fleet.root / "controller.toml"
    path.write_text(dump_controller(config))
    argv = [str(BIN / "fleet"), "controller", "run", "--config", str(path)]
    return Proc(argv, fleet.root / "controller.log").start()


def _agent(fleet: Secured, tenant: str, host: str, socket: str) -> Proc:
    config = AgentConfig(
        tenant=tenant,
        host=host,
        nats=NatsSettings(
            servers=[fleet.server.url],
            nkey_seed=str(fleet.store.host_seed(tenant, host)),
            inbox_prefix=host_inbox(host),
        ),
        tmux_socket=socket,
        state_dir=str(fleet.root / f"agent-{tenant}"),
        heartbeat_interval_s=0.5,
        allow_root=True,
        poll_interval_s=0.25,
        sessions=[_stub(f"{tenant}-coder")],
    )
    path = fleet.root / f"agent-{tenant}.toml"
    path.write_text(dump(config))
    argv = [str(BIN / "fleet-agent"), "run", "--config", str(path)]
    return Proc(argv, fleet.root / f"agent-{tenant}.log").start()


async def _connect(
    fleet: Secured, seed: Path, name: str, errors: list[str], closed: anyio.Event | None = None
) -> Any:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    async def on_closed() -> None:
        if closed is not None:
            closed.set()

    return await nats.connect(
        fleet.server.url,
        nkeys_seed=str(seed),
        inbox_prefix=cli_inbox(name),
        allow_reconnect=False,
        max_reconnect_attempts=1,
        connect_timeout=2,
        error_cb=on_error,
        closed_cb=on_closed,
    )


def test_a_spoofed_issued_by_is_ignored(secured: Secured) -> None:
    command_id = uuid.uuid4().hex

    async def main() -> CommandResult:
        nc = await _connect(secured, secured.store.operator_seed("bob"), "bob", [])
        try:
            request = CommandRequest(
                target="acme/h1/acme-coder",
                body=Takeover(session="acme-coder", reason="spoof", ttl_s=60),
                issued_by="alice@elsewhere",
                command_id=command_id,
            )
            msg = await nc.request(api.CMD.subject_for("bob"), encode(request), timeout=10)
            return decode(msg.data, CommandResult)
        finally:
            await nc.close()

    result = anyio.run(main)
    assert result.outcome is Outcome.OK, result
    assert result.message.startswith("bob holds acme-coder"), result.message
    # The stored audit event and the lease name the subject's identity, not the claim.
    stored = wait_for(
        lambda: [
            e
            for e in secured.events("--type", "command")
            if e["payload"].get("command_id") == command_id
        ],
        what="the takeover's command event",
    )
    assert stored[0]["payload"]["issued_by"] == "bob"
    acquired = [
        e for e in secured.events("--type", "lease.acquired") if e["payload"]["reason"] == "spoof"
    ]
    assert acquired and acquired[0]["payload"]["holder"] == "bob", acquired
    # The CLI's $FLEET_OPERATOR is a claim too: alice cannot release bob's lease with it,
    # nor bob alice's by claiming to be her.
    code, out = secured.cli_json("alice", "release", "acme-coder", FLEET_OPERATOR="bob")
    assert (code, out["outcome"]) == (1, "lease_held"), out
    assert "lease held by bob" in out["message"]
    code, out = secured.cli_json("bob", "release", "acme-coder", FLEET_OPERATOR="alice")
    assert (code, out["outcome"]) == (0, "ok"), out


def test_an_operator_of_one_tenant_is_refused_on_another(secured: Secured) -> None:
    refused = secured.cli("gina", "send", "acme/h1/acme-coder", "hello")
    assert refused.returncode == 1, refused
    assert refused.stderr.count("\n") == 1 and "forbidden" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    # A bare name finds nothing outside her tenants (and so says nothing about them).
    code, out = secured.cli_json("gina", "send", "acme-coder", "hello")
    assert (code, out["outcome"]) == (1, "unknown_session"), out
    listed = secured.cli("gina", "ps", "--tenant", "acme")
    assert listed.returncode == 1 and "forbidden" in listed.stderr, listed
    assert listed.stderr.count("\n") == 1
    code, rows = secured.cli_json("gina", "ps")
    assert code == 0 and {r["tenant"] for r in rows} == {"globex"}, rows
    nothing = secured.cli("gina", "events", "search", "--tenant", "acme")
    assert nothing.returncode == 1 and "forbidden" in nothing.stderr, nothing


def test_a_viewer_reads_but_is_refused_send(secured: Secured) -> None:
    refused = secured.cli("vera", "send", "acme/h1/acme-coder", "hello")
    assert refused.returncode == 1, refused
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "forbidden: send needs the operator role; vera is a viewer" in refused.stderr
    code, rows = secured.cli_json("vera", "ps")
    assert code == 0 and {r["tenant"] for r in rows} == {"acme"}, rows
    code, out = secured.cli_json("vera", "explain", "acme-coder")
    assert (code, out["outcome"]) == (0, "ok"), out


def test_release_force_is_an_admins_and_audited(secured: Secured) -> None:
    code, out = secured.cli_json(
        "alice", "takeover", "acme-coder", "--reason", "mine", "--ttl", "60"
    )
    assert (code, out["outcome"]) == (0, "ok"), out
    code, out = secured.cli_json("bob", "release", "acme-coder", "--force")
    assert (code, out["outcome"]) == (1, "bad_request"), out
    assert "release --force needs the admin role" in out["message"]
    code, out = secured.cli_json("root", "release", "acme-coder", "--force")
    assert (code, out["outcome"]) == (0, "ok"), out
    released = wait_for(
        lambda: [
            e for e in secured.events("--type", "lease.released") if e["payload"]["by"] == "root"
        ],
        what="the forced release's event",
    )
    assert released[0]["payload"]["holder"] == "alice"
    code, out = secured.cli_json("bob", "send", "acme-coder", "free again", "--no-verify")
    assert (code, out["outcome"]) == (0, "delivered"), out


def test_an_operator_cannot_publish_on_another_operators_prefix(secured: Secured) -> None:
    async def main() -> list[str]:
        errors: list[str] = []
        nc = await _connect(secured, secured.store.operator_seed("alice"), "alice", errors)
        ask = encode(PsRequest())
        targets = [
            api.PS.subject_for("bob"),  # as bob
            api.PS.subject,  # the unauthenticated subject
            subjects.command("acme", "h1"),  # a host's command subject
        ]
        for target in targets:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(target, ask, timeout=0.5)
        await nc.subscribe(subjects.controller_api_all())  # listen to everyone's requests
        await nc.subscribe("_INBOX.cli.bob.>")  # or to bob's replies
        await nc.flush()
        for _ in range(250):
            if len(errors) >= len(targets) + 2:
                break
            await anyio.sleep(0.02)
        await nc.close()
        return errors

    errors = anyio.run(main)
    for target in ["fleet.ctl.u.bob.ps", "fleet.ctl.ps", "fleet.acme.cmd.h1"]:
        assert any("permissions violation for publish" in e and target in e for e in errors)
    for target in ["fleet.ctl.>", "_inbox.cli.bob.>"]:
        assert any("permissions violation for subscription" in e and target in e for e in errors)


def test_a_removed_operator_is_refused_after_the_reload(secured: Secured) -> None:
    data = ["--data-dir", str(secured.data_dir)]
    pid_file = ["--nats-pid-file", str(secured.server.data_dir / "nats-server.pid")]
    added = secured.cli("root", "operator", "add", "temp", "--tenant", "acme", *data, *pid_file)
    assert added.returncode == 0 and "reloaded" in added.stdout, added
    seed = secured.store.operator_seed("temp")
    assert seed.stat().st_mode & 0o777 == 0o600
    kept = secured.root / "stolen-temp.nk"
    shutil.copy(seed, kept)
    assert secured.cli("temp", "ps").returncode == 0
    listed = secured.cli("root", "operator", "list", "--json", *data)
    assert {"operator": "temp", "role": "viewer", "tenants": ["acme"]}.items() <= next(
        r for r in json.loads(listed.stdout) if r["operator"] == "temp"
    ).items()

    async def revoke_while_connected() -> None:
        closed = anyio.Event()
        await _connect(secured, kept, "temp", [], closed)  # connected before the revocation
        removed = await anyio.to_thread.run_sync(
            lambda: secured.cli("root", "operator", "remove", "temp", *data, *pid_file)
        )
        assert removed.returncode == 0 and "reloaded" in removed.stdout, removed
        with anyio.fail_after(10):  # the reload closes it
            await closed.wait()

    anyio.run(revoke_while_connected)
    assert not seed.exists()
    after = secured.cli("temp", "ps")  # the context still names the copied seed's path
    assert after.returncode == 2 and after.stderr.count("\n") == 1, after
    seed.write_bytes(kept.read_bytes())  # even with the old seed back in place
    again = secured.cli("temp", "ps")
    assert again.returncode == 2 and "authorization" in again.stderr.lower(), again


def test_access_rules_without_a_broker(tmp_path: Path) -> None:
    store = TenancyStore(tmp_path / "tenancy")
    store.add_tenant("acme")
    store.add_tenant("globex")
    store.add_operator("multi", Role.VIEWER, ["acme", "globex"])
    access = Access(store.registry_path)
    refused = access.caller(None, "alice")
    assert isinstance(refused, ApiError) and refused.code is ErrorCode.FORBIDDEN
    assert isinstance(access.caller("nobody"), ApiError)
    multi = access.caller("multi")
    assert isinstance(multi, Caller) and multi.tenants == {"acme", "globex"}
    ps = admit(multi, "ps", PsRequest())
    assert isinstance(ps, ApiError) and "name one" in ps.message
    assert admit(multi, "ps", PsRequest(tenant="globex")) == PsRequest(tenant="globex")
    assert isinstance(admit(multi, "store.rebuild", RebuildRequest()), ApiError)
    # Without a registry, or keyless (`fleet up --insecure` on a data dir a secure run left
    # a registry in), the plain subject serves an unproven admin.
    keyless = ControllerConfig(tenants=["acme"], data_dir=str(tmp_path))
    keyed = ControllerConfig(
        tenants=["acme"], data_dir=str(tmp_path), nats=NatsSettings(nkey_seed="x.nk")
    )
    assert Access.for_config(keyed).secure and not Access.for_config(keyless).secure
    for open_access in (Access(tmp_path / "none" / "registry.json"), Access.for_config(keyless)):
        anyone = open_access.caller(None, "alice")
        assert isinstance(anyone, Caller) and anyone.role is Role.ADMIN and not anyone.proven
    cmd = CommandRequest(target="x", body=Send(session="x", text="hi"), issued_by="mallory")
    assert admit(Caller("bob", Role.OPERATOR, None, True), "cmd", cmd).issued_by == "bob"
    force = CommandRequest(target="x", body=Release(session="x", force=True), issued_by="b")
    forced = admit(Caller("bob", Role.OPERATOR, None, True), "cmd", force)
    assert isinstance(forced, CommandResult) and forced.outcome is Outcome.BAD_REQUEST
