"""Against a real nats-server running the generated config: tenants cannot see each other,
hosts cannot impersonate each other, the CLI reaches only the controller API, and a revoked
host is cut off by a reload. Every denial is observed as a permissions error from the server,
and observers holding the controller's credentials count the messages that cross: zero.
"""

from __future__ import annotations

import gc
import shutil
import ssl
import subprocess
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controller.events.ingest import replay
from controller.events.streams import StreamSettings, ensure_stream
from controller.natsserver.accounts import TenancyStore, new_user_seed, reload_server
from controller.natsserver.config import (
    TlsOptions,
    cli_inbox,
    controller_inbox,
    host_inbox,
    include_directive,
    render_tls,
)
from controller.natsserver.embedded import EmbeddedNats
from protocol import subjects
from protocol.api import Role
from protocol.events import CONTROLLER_ONLY_TYPES
from tests.support.fleet import wait_for

TENANTS = {"acme": ["h1", "h2"], "globex": ["g1"]}


@dataclass
class Conn:
    nc: Client
    errors: list[str] = field(default_factory=list)
    got: list[str] = field(default_factory=list)

    async def record(self, msg: Msg) -> None:
        self.got.append(msg.subject)

    def denied(self, subject: str) -> bool:
        return any(
            "permissions violation" in e and f'"{subject.lower()}"' in e for e in self.errors
        )


async def connect(url: str, seed: Path, inbox: str, **kw: object) -> Conn:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        url,
        nkeys_seed=str(seed),
        inbox_prefix=inbox,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        connect_timeout=2,
        error_cb=on_error,
        **kw,  # type: ignore[arg-type]
    )
    return Conn(nc, errors)


async def until(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {within}s waiting for {what or predicate}")


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmbeddedNats, TenancyStore]]:
    root = tmp_path_factory.mktemp("secure")
    store = TenancyStore(root / "controller" / "tenancy")
    for tenant, hosts in TENANTS.items():
        store.add_tenant(tenant)
        for host in hosts:
            store.add_host(tenant, host)
    store.add_operator("alice", Role.ADMIN, [])
    server = EmbeddedNats(root / "nats")
    server.extra_config = include_directive(server.config_path, store.auth_conf_path)
    server.start()
    yield server, store
    server.stop()


async def observers(url: str, store: TenancyStore) -> dict[str, Conn]:
    """The controller's own connections, subscribed to everything they may see."""
    out: dict[str, Conn] = {}
    for tenant in TENANTS:
        obs = await connect(url, store.tenant_controller_seed(tenant), controller_inbox())
        await ensure_stream(obs.nc.jetstream(), tenant, StreamSettings())
        for pattern in (
            subjects.all_heartbeats(tenant),
            subjects.all_lifecycles(tenant),
            subjects.all_events(tenant),
            f"fleet.{tenant}.out.*.>",
        ):
            await obs.nc.subscribe(pattern, cb=obs.record)
        out[tenant] = obs
    ctl = await connect(url, store.control_controller_seed(), controller_inbox())

    async def answer(msg: Msg) -> None:
        ctl.got.append(msg.subject)
        await msg.respond(b'{"ok":true}')

    await ctl.nc.subscribe(subjects.controller_api_all(), cb=answer)
    out["ctl"] = ctl
    for conn in out.values():
        await conn.nc.flush()
    return out


async def stream_messages(conn: Conn, tenant: str) -> int:
    info = await conn.nc.jetstream().stream_info(subjects.event_stream_name(tenant))
    return info.state.messages


async def close_all(*conns: Conn) -> None:
    for conn in conns:
        if not conn.nc.is_closed:
            await conn.nc.close()


async def refused(attempt: Callable[[], Awaitable[object]]) -> str:
    """Expect a connect to fail; returns why. nats-py leaves the socket of a refused connect
    to the garbage collector, so collect it here, where its ResourceWarning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            await attempt()
        except Exception as exc:
            reason = (str(exc) or type(exc).__name__).lower()
        else:
            raise AssertionError("the connection was accepted")
        await anyio.sleep(0.05)
        gc.collect()
    return reason


def run(fn: Callable[[], Awaitable[None]]) -> None:
    anyio.run(fn)


def test_a_host_publishes_its_own_subjects_and_answers_its_commands(secured) -> None:
    server, store = secured

    async def main() -> None:
        obs = await observers(server.url, store)
        h1 = await connect(server.url, store.host_seed("acme", "h1"), host_inbox("h1"))

        async def on_cmd(msg: Msg) -> None:
            await msg.respond(b"done")  # allow_responses: the reply goes to the controller

        await h1.nc.subscribe(subjects.command("acme", "h1"), cb=on_cmd)
        await h1.nc.publish(subjects.heartbeat("acme", "h1"), b"{}")
        await h1.nc.publish(subjects.lifecycle("acme", "h1"), b"{}")
        await h1.nc.publish(subjects.output("acme", "h1", "s1"), b"x")
        # JetStream publishing with nothing but the subject and the host's own inbox.
        ack = await h1.nc.jetstream().publish(
            subjects.event("acme", "h1", "s1", "run.completed"), b"{}", timeout=3
        )
        assert ack.stream == subjects.event_stream_name("acme")
        await h1.nc.flush()
        reply = await obs["acme"].nc.request(subjects.command("acme", "h1"), b"{}", timeout=3)
        assert reply.data == b"done"
        await until(lambda: len(obs["acme"].got) >= 4)
        assert sorted(obs["acme"].got) == sorted(
            [
                subjects.heartbeat("acme", "h1"),
                subjects.lifecycle("acme", "h1"),
                subjects.output("acme", "h1", "s1"),
                subjects.event("acme", "h1", "s1", "run.completed"),
            ]
        )
        assert h1.errors == []
        await close_all(h1, *obs.values())

    run(main)


def test_another_tenants_subjects_and_streams_are_out_of_reach(secured) -> None:
    server, store = secured

    async def main() -> None:
        obs = await observers(server.url, store)
        before = await stream_messages(obs["globex"], "globex")
        h1 = await connect(server.url, store.host_seed("acme", "h1"), host_inbox("h1"))
        sub_targets = [
            subjects.all_heartbeats("globex"),
            subjects.command("globex", "g1"),
            subjects.all_events("globex"),
            "fleet.globex.>",
            "fleet.>",
            ">",
            "_INBOX.>",
        ]
        pub_targets = [
            subjects.heartbeat("globex", "g1"),
            subjects.lifecycle("globex", "g1"),
            subjects.event("globex", "g1", "s1", "note"),
            subjects.output("globex", "g1", "s1"),
            subjects.command("globex", "g1"),
        ]
        for target in sub_targets:
            await h1.nc.subscribe(target, cb=h1.record)
        for target in pub_targets:
            await h1.nc.publish(target, b"{}")
        # Neither another tenant's stream nor its own may be looked at through the JS API.
        for stream in ("globex", "acme"):
            with pytest.raises(nats.errors.TimeoutError):
                await h1.nc.jetstream(timeout=1).stream_info(subjects.event_stream_name(stream))
        await h1.nc.flush()
        for target in [*sub_targets, *pub_targets]:
            await until(lambda t=target: h1.denied(t), what=f"denial of {target}: {h1.errors}")
        for api in ("$JS.API.STREAM.INFO.FLEET_EVT_globex", "$JS.API.STREAM.INFO.FLEET_EVT_acme"):
            assert h1.denied(api), h1.errors
        # Traffic in globex goes on, and none of it reaches acme's host.
        await obs["globex"].nc.publish(subjects.command("globex", "g1"), b"{}")
        await anyio.sleep(0.3)
        assert obs["globex"].got == []  # zero messages crossed
        assert h1.got == []
        assert await stream_messages(obs["globex"], "globex") == before
        await close_all(h1, *obs.values())

    run(main)


def test_a_host_cannot_act_as_another_host_or_call_the_controller_api(secured) -> None:
    server, store = secured

    async def main() -> None:
        obs = await observers(server.url, store)
        before = await stream_messages(obs["acme"], "acme")
        h1 = await connect(server.url, store.host_seed("acme", "h1"), host_inbox("h1"))
        pub_targets = [
            subjects.heartbeat("acme", "h2"),
            subjects.lifecycle("acme", "h2"),
            subjects.event("acme", "h2", "s1", "note"),
            subjects.output("acme", "h2", "s1"),
            subjects.command("acme", "h2"),
            subjects.controller_api("ps"),
            f"{host_inbox('h2')}.x",
            f"{controller_inbox()}.x",
        ]
        sub_targets = [
            subjects.command("acme", "h2"),
            "fleet.acme.cmd.*",
            subjects.all_heartbeats("acme"),
            f"{host_inbox('h2')}.>",
            f"{controller_inbox()}.>",
            subjects.controller_api_all(),
        ]
        for target in sub_targets:
            await h1.nc.subscribe(target, cb=h1.record)
        for target in pub_targets:
            await h1.nc.publish(target, b"{}")
        await h1.nc.flush()
        for target in [*sub_targets, *pub_targets]:
            await until(lambda t=target: h1.denied(t), what=f"denial of {target}: {h1.errors}")
        await obs["acme"].nc.publish(subjects.command("acme", "h2"), b"{}")
        await anyio.sleep(0.3)
        assert obs["acme"].got == [] and obs["ctl"].got == [] and h1.got == []
        assert await stream_messages(obs["acme"], "acme") == before
        await close_all(h1, *obs.values())

    run(main)


def test_a_host_cannot_record_what_only_a_controller_records(secured) -> None:
    """attention.* events change every replica's queue (an ack names an operator): a host
    may publish its own events, but not those types."""
    server, store = secured

    async def main() -> None:
        obs = await observers(server.url, store)
        before = await stream_messages(obs["acme"], "acme")
        h1 = await connect(server.url, store.host_seed("acme", "h1"), host_inbox("h1"))
        targets = [subjects.event("acme", "h1", "s1", t) for t in CONTROLLER_ONLY_TYPES]
        for target in targets:
            await h1.nc.publish(target, b"{}")
        await h1.nc.flush()
        for target in targets:
            await until(lambda t=target: h1.denied(t), what=f"denial of {target}: {h1.errors}")
        assert await stream_messages(obs["acme"], "acme") == before
        # Its ordinary events still reach the stream.
        allowed = subjects.event("acme", "h1", "s1", "note")
        await h1.nc.publish(allowed, b"{}")
        await h1.nc.flush()
        for _ in range(100):
            if await stream_messages(obs["acme"], "acme") == before + 1:
                break
            await anyio.sleep(0.05)
        assert await stream_messages(obs["acme"], "acme") == before + 1
        assert not h1.denied(allowed)
        await close_all(h1, *obs.values())

    run(main)


def test_the_cli_reaches_only_the_controller_api(secured) -> None:
    server, store = secured

    async def main() -> None:
        obs = await observers(server.url, store)
        cli = await connect(server.url, store.operator_seed("alice"), cli_inbox("alice"))
        reply = await cli.nc.request(subjects.operator_api("alice", "ps"), b"{}", timeout=3)
        assert reply.data == b'{"ok":true}'
        targets = [subjects.heartbeat("acme", "h1"), subjects.command("acme", "h1")]
        for target in targets:
            await cli.nc.publish(target, b"{}")
        for target in (subjects.controller_api_all(), "_INBOX.>", f"{controller_inbox()}.>"):
            await cli.nc.subscribe(target, cb=cli.record)
            targets.append(target)
        await cli.nc.flush()
        for target in targets:
            await until(lambda t=target: cli.denied(t), what=f"denial of {target}")
        await anyio.sleep(0.2)
        assert obs["acme"].got == [] and obs["globex"].got == [] and cli.got == []
        assert obs["ctl"].got == [subjects.operator_api("alice", "ps")]
        await close_all(cli, *obs.values())

    run(main)


def test_unknown_keys_and_anonymous_clients_cannot_connect(secured) -> None:
    server, _store = secured
    stranger = server.data_dir / "stranger.nk"
    stranger.write_bytes(new_user_seed()[0])

    async def main() -> None:
        assert "authorization" in await refused(lambda: connect(server.url, stranger, "_INBOX.x"))
        assert "authorization" in await refused(
            lambda: nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=1)
        )

    run(main)


def test_tenant_accounts_carry_jetstream_limits(secured) -> None:
    server, store = secured

    async def main() -> None:
        ctl = await connect(server.url, store.tenant_controller_seed("acme"), controller_inbox())
        info = await ctl.nc.jetstream().account_info()
        assert info.limits.max_streams == 4 and info.limits.max_consumers == 64
        assert info.streams == 1  # its own stream only: globex's lives in another account
        await close_all(ctl)

    run(main)


def test_a_revoked_host_is_cut_off_and_cannot_reconnect(tmp_path: Path) -> None:
    store = TenancyStore(tmp_path / "controller" / "tenancy")
    store.add_tenant("acme")
    for host in ("h1", "h2"):
        store.add_host("acme", host)
    kept = tmp_path / "stolen-h1.nk"  # what an attacker holding the old seed still has
    shutil.copy(store.host_seed("acme", "h1"), kept)
    server = EmbeddedNats(tmp_path / "nats")
    server.extra_config = include_directive(server.config_path, store.auth_conf_path)

    async def main() -> None:
        obs = await observers_for(server.url, store, "acme")
        h1 = await connect(server.url, store.host_seed("acme", "h1"), host_inbox("h1"))
        h2 = await connect(server.url, store.host_seed("acme", "h2"), host_inbox("h2"))
        store.remove_host("acme", "h1")
        assert not store.host_seed("acme", "h1").exists()
        assert reload_server(server.data_dir / "nats-server.pid") == server.pid
        await until(lambda: h1.nc.is_closed, within=10, what="h1's connection closed")
        assert "authorization" in await refused(lambda: connect(server.url, kept, host_inbox("h1")))
        # Nothing else was restarted: h2 and the controller carry on over the same links.
        await h2.nc.publish(subjects.heartbeat("acme", "h2"), b"{}")
        await until(lambda: obs.got == [subjects.heartbeat("acme", "h2")], what="h2 heard")
        assert h2.nc.is_connected and server.process is not None and server.process.poll() is None
        await close_all(h2, obs)

    with server:
        run(main)


async def observers_for(url: str, store: TenancyStore, tenant: str) -> Conn:
    obs = await connect(url, store.tenant_controller_seed(tenant), controller_inbox())
    await obs.nc.subscribe(subjects.all_heartbeats(tenant), cb=obs.record)
    await obs.nc.flush()
    return obs


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls_with_client_certificates(tmp_path: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=fleet-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(tmp_path / f"{name}.key"),
            "-out",
            str(tmp_path / f"{name}.csr"),
        )
        ext = tmp_path / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        openssl(
            "x509",
            "-req",
            "-in",
            str(tmp_path / f"{name}.csr"),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            str(ext),
            "-out",
            str(tmp_path / f"{name}.pem"),
        )
    store = TenancyStore(tmp_path / "controller" / "tenancy")
    store.add_tenant("acme")
    seed = store.add_host("acme", "h1")
    server = EmbeddedNats(tmp_path / "nats")
    tls = TlsOptions(
        cert_file=str(tmp_path / "server.pem"),
        key_file=str(tmp_path / "server.key"),
        ca_file=str(ca),
        verify=True,
    )
    server.extra_config = render_tls(tls) + include_directive(
        server.config_path, store.auth_conf_path
    )

    async def main() -> None:
        with_cert = ssl.create_default_context(cafile=str(ca))
        with_cert.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        h1 = await connect(
            f"tls://{server.host}:{server.port}", seed, host_inbox("h1"), tls=with_cert
        )
        await h1.nc.publish(subjects.heartbeat("acme", "h1"), b"{}")
        await h1.nc.flush()
        await close_all(h1)
        without = ssl.create_default_context(cafile=str(ca))
        await refused(
            lambda: connect(
                f"tls://{server.host}:{server.port}", seed, host_inbox("h1"), tls=without
            )
        )

    with server:
        wait_for(lambda: server.process is not None, what="server")
        run(main)


def test_the_controllers_tenant_credentials_suffice_for_ingest(secured) -> None:
    """Stream setup, a durable pull consumer with acks, replay and synthesized events: what
    controller/ingest.py does, under the tenant controller's permissions only."""
    server, store = secured

    async def main() -> None:
        ctl = await connect(server.url, store.tenant_controller_seed("globex"), controller_inbox())
        js = ctl.nc.jetstream()
        await ensure_stream(js, "globex", StreamSettings())
        g1 = await connect(server.url, store.host_seed("globex", "g1"), host_inbox("g1"))
        await g1.nc.jetstream().publish(subjects.event("globex", "g1", "s1", "x"), b"1")
        await js.publish(subjects.event("globex", "g1", "s1", "synth"), b"2")
        psub = await js.pull_subscribe(
            subjects.all_events("globex"), durable="fleet-store-test", stream="FLEET_EVT_globex"
        )
        msgs = await psub.fetch(2, timeout=3)
        assert [m.data for m in msgs] == [b"1", b"2"]
        for msg in msgs:
            await msg.ack_sync(timeout=3)
        info = await js.consumer_info("FLEET_EVT_globex", "fleet-store-test")
        assert info.num_ack_pending == 0 and info.delivered.stream_seq >= 2
        events, _ = await replay(js, "globex")
        assert len(events) >= 2
        assert ctl.errors == [] and g1.errors == []
        await psub.unsubscribe()
        await close_all(g1, ctl)

    run(main)
