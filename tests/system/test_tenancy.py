"""The credential store and the rendered config: private files, public keys only in the
config, revocation, least-privilege patterns, and the `fleet tenant|host|nats-config` CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.natsserver.accounts import TenancyError, TenancyStore, public_key_of
from controller.natsserver.config import (
    TlsOptions,
    host_permissions,
    operator_permissions,
    render_server,
    tenant_controller_permissions,
)
from controller.natsserver.embedded import nats_server_binary
from protocol import subjects
from protocol.ids import IdError
from tests.support.fleet import BIN


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, `>` one or more at the end."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


@pytest.fixture
def store(tmp_path: Path) -> TenancyStore:
    return TenancyStore(tmp_path / "controller" / "tenancy")


def test_credentials_are_private_files_and_the_config_holds_public_keys_only(
    store: TenancyStore,
) -> None:
    store.add_tenant("acme", linux_user="acme")
    seed = store.add_host("acme", "h1")
    registry = store.load()
    assert registry.tenants["acme"].linux_user == "acme"
    assert public_key_of(seed) == registry.tenants["acme"].hosts["h1"].public_key
    for path in store.root.rglob("*"):
        if path.name == ".lock":
            continue
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert mode(store.root) == 0o700
    conf = store.auth_conf_path.read_text()
    assert registry.tenants["acme"].hosts["h1"].public_key in conf
    for seed_file in store.root.rglob("*.nk"):
        assert seed_file.read_text().startswith("SU")
        assert seed_file.read_text().strip() not in conf


def test_mistakes_are_refused(store: TenancyStore) -> None:
    store.add_tenant("acme")
    store.add_host("acme", "h1")
    with pytest.raises(TenancyError, match="exists already"):
        store.add_tenant("acme")
    with pytest.raises(TenancyError, match="exists already"):
        store.add_host("acme", "h1")
    with pytest.raises(TenancyError, match="no tenant"):
        store.add_host("globex", "h1")
    with pytest.raises(TenancyError, match="no host"):
        store.remove_host("acme", "h9")
    for bad in ("ctl", "a.b", "a*", ">", "", "x" * 65):
        with pytest.raises(IdError):
            store.add_tenant(bad)
    with pytest.raises(IdError):
        store.add_host("acme", "h1.evt")


def test_removing_a_host_deletes_its_seed_and_its_key_from_the_config(
    store: TenancyStore,
) -> None:
    store.add_tenant("acme")
    seed = store.add_host("acme", "h1")
    store.add_host("acme", "h2")
    key = public_key_of(seed)
    store.remove_host("acme", "h1")
    assert not seed.exists()
    assert key not in store.auth_conf_path.read_text()
    assert "h1" not in store.load().tenants["acme"].hosts
    assert [r.public_key for r in store.load().tenants["acme"].revoked] == [key]
    assert store.load().tenants["acme"].hosts["h2"].public_key in store.auth_conf_path.read_text()


ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")


@settings(max_examples=200)
@given(tenant=ids.filter(lambda t: t != "ctl"), host=ids, other=ids, session=ids)
def test_a_host_may_touch_only_its_own_subjects(
    tenant: str, host: str, other: str, session: str
) -> None:
    perms = host_permissions(tenant, host)
    own = [
        subjects.heartbeat(tenant, host),
        subjects.lifecycle(tenant, host),
        subjects.event(tenant, host, session, "run.completed"),
        subjects.output(tenant, host, session),
    ]
    for subject in own:
        assert any(matches(p, subject) for p in perms.publish), subject
    if other != host:
        foreign = [
            subjects.heartbeat(tenant, other),
            subjects.lifecycle(tenant, other),
            subjects.event(tenant, other, session, "x"),
            subjects.output(tenant, other, session),
            subjects.command(tenant, other),
        ]
        for subject in foreign:
            assert not any(matches(p, subject) for p in perms.publish + perms.subscribe)
    assert not any(matches(p, subjects.controller_api("ps")) for p in perms.publish)
    assert not any(p.startswith("$JS") or p in (">", "_INBOX.>") for p in perms.publish)
    assert perms.subscribe[0] == subjects.command(tenant, host)


def test_the_controller_and_cli_stay_inside_their_own_subjects() -> None:
    ctl = tenant_controller_permissions("acme", subjects.event_stream_name("acme"))
    for pattern in ctl.publish + ctl.subscribe:
        assert pattern.startswith(("fleet.acme.", "$JS.", "_INBOX.controller.")), pattern
    cli = operator_permissions("alice")
    assert cli.publish == ["fleet.ctl.u.alice.>"]  # its own prefix: never fleet.ctl.>
    assert cli.subscribe == ["_INBOX.cli.alice.>"]


def test_the_rendered_server_config_is_accepted_by_nats_server(
    store: TenancyStore, tmp_path: Path
) -> None:
    store.add_tenant("acme")
    store.add_tenant("globex")
    store.add_host("acme", "h1")
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("")
    tls = TlsOptions(
        cert_file=str(tmp_path / "cert.pem"),
        key_file=str(tmp_path / "key.pem"),
        ca_file=str(tmp_path / "ca.pem"),
        verify=True,
    )
    plain = render_server(store.load(), store_dir=tmp_path / "js")
    conf = tmp_path / "nats.conf"
    conf.write_text(plain)
    result = subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(conf)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "TENANT_acme" in plain and "TENANT_globex" in plain and 'system_account: "SYS"' in plain
    with_tls = render_server(store.load(), tls=tls)
    assert "verify: true" in with_tls and str(tmp_path / "ca.pem") in with_tls


def fleet(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fleet"), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_the_cli_creates_lists_renders_and_revokes(tmp_path: Path) -> None:
    data = tmp_path / "controller"
    assert fleet("tenant", "add", "acme", "--linux-user", "acme", data_dir=data).returncode == 0
    added = fleet("host", "add", "acme/h1", data_dir=data)
    assert added.returncode == 0, added.stderr
    seed = data / "tenancy" / "tenants" / "acme" / "hosts" / "h1.nk"
    assert f'nkey_seed = "{seed}"' in added.stdout
    assert 'inbox_prefix = "_INBOX.host.h1"' in added.stdout
    listed = json.loads(fleet("host", "list", "--json", data_dir=data).stdout)
    assert [(r["tenant"], r["host"]) for r in listed] == [("acme", "h1")]
    tenants = json.loads(fleet("tenant", "list", "--json", data_dir=data).stdout)
    assert tenants == [{"tenant": "acme", "linux_user": "acme", "hosts": 1}]
    out = tmp_path / "nats.conf"
    assert fleet("nats-config", "-o", str(out), data_dir=data).returncode == 0
    assert listed[0]["public_key"] in out.read_text()
    assert mode(out) == 0o600
    bad = fleet("host", "add", "acme", data_dir=data)
    assert bad.returncode == 2 and "TENANT/HOST" in bad.stderr
    tls_alone = fleet("nats-config", "--tls-cert", "x.pem", data_dir=data)
    assert tls_alone.returncode == 2 and "--tls-key" in tls_alone.stderr
    removed = fleet(
        "host", "remove", "acme/h1", "--nats-pid-file", str(tmp_path / "none.pid"), data_dir=data
    )
    assert removed.returncode == 0 and "revoked" in removed.stdout
    assert not seed.exists()
    assert json.loads(fleet("host", "list", "--json", data_dir=data).stdout) == []
    again = fleet("host", "remove", "acme/h1", data_dir=data)
    assert again.returncode == 2 and "no host acme/h1" in again.stderr
