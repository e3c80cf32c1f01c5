"""The credential store: tenants, their hosts, and the controller's and CLI's own keys.

Everything lives under ``<controller data dir>/tenancy/`` (0700): ``registry.json`` lists
tenants and hosts with their nkey *public* keys; every nkey *seed* is a file of its own
(0600), so handing one host its credentials means copying exactly one file. The nats-server
config is derived from the registry (``controller/natsconfig.py``) and holds public keys
only: leaking it lets nobody connect.

Removing a host or an operator deletes its seed and drops its public key from the registry;
the next rendered config no longer names it, and a config reload (SIGHUP) closes its
connections.
"""

# Long on purpose: the registry's records and the store that writes them: one format.
from __future__ import annotations

import fcntl
import getpass
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import nkeys

from protocol.api import Role
from protocol.ids import MAX_ID_LENGTH, validate_host, validate_id, validate_tenant

REGISTRY_VERSION = 1


class TenancyError(ValueError):
    """A tenancy operation cannot be done; the message says why."""


class HostRecord(msgspec.Struct, frozen=True, kw_only=True):
    public_key: str
    created_at: float


class RevokedHost(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    public_key: str
    revoked_at: float


class TenantRecord(msgspec.Struct, frozen=True, kw_only=True):
    controller_key: str  # the controller's identity inside this tenant's account
    linux_user: str | None = None  # sessions of this tenant run as this user
    hosts: dict[str, HostRecord] = {}
    revoked: list[RevokedHost] = []  # kept for the audit trail; never rendered
    created_at: float = 0.0


class OperatorRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A person at the CLI: publishes only on fleet.ctl.u.<name>.>, in CONTROL."""

    public_key: str
    role: Role
    tenants: list[str] = []  # what a viewer or operator may see and steer; admins: all
    created_at: float = 0.0


class RevokedOperator(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    public_key: str
    revoked_at: float


class Registry(msgspec.Struct, kw_only=True):
    version: int = REGISTRY_VERSION
    system_key: str = ""  # user in the system account (monitoring, `nats server` tools)
    control_controller_key: str = ""  # the controller serving fleet.ctl.> in CONTROL
    # The one shared CLI identity of earlier versions: read, never rendered again (it could
    # publish on every operator's prefix). `fleet operator add` replaces it.
    cli_keys: dict[str, str] = {}
    operators: dict[str, OperatorRecord] = {}
    revoked_operators: list[RevokedOperator] = []  # the audit trail; never rendered
    tenants: dict[str, TenantRecord] = {}


def local_admin_name() -> str:
    """The operator name `fleet up` gives the local user: the login, made a valid id."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no $USER (containers)
        login = ""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", login).lstrip("_-")[:MAX_ID_LENGTH]
    return name or "admin"


def new_user_seed() -> tuple[bytes, str]:
    """A fresh nkey user seed and its public key (``U...``)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(bytearray(seed)).public_key.decode()


def public_key_of(seed_file: Path) -> str:
    return nkeys.from_seed(bytearray(seed_file.read_bytes().strip())).public_key.decode()


def _private_dirs(path: Path) -> None:
    # mkdir(parents=True) gives the parents umask modes; every level we create is 0700.
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; the file is 0600 from its first byte."""
    _private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by umask; be explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class TenancyStore:
    """Reads and changes one ``tenancy/`` directory; every change holds an flock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths ------------------------------------------------------------------------------
    @property
    def registry_path(self) -> Path:
        return self.root / "registry.json"

    @property
    def auth_conf_path(self) -> Path:
        """The rendered accounts block, rewritten after every change (for `include`)."""
        return self.root / "auth.conf"

    def host_seed(self, tenant: str, host: str) -> Path:
        return (
            self.root / "tenants" / validate_tenant(tenant) / "hosts" / f"{validate_host(host)}.nk"
        )

    def tenant_controller_seed(self, tenant: str) -> Path:
        return self.root / "tenants" / validate_tenant(tenant) / "controller.nk"

    def control_controller_seed(self) -> Path:
        return self.root / "control" / "controller.nk"

    def operator_seed(self, name: str) -> Path:
        return self.root / "control" / "operators" / f"{validate_id(name, 'operator')}.nk"

    def system_seed(self) -> Path:
        return self.root / "system" / "sys.nk"

    # -- reading ----------------------------------------------------------------------------
    def load(self) -> Registry:
        try:
            raw = self.registry_path.read_bytes()
        except FileNotFoundError:
            return Registry()
        try:
            registry = msgspec.json.decode(raw, type=Registry)
        except msgspec.DecodeError as exc:
            raise TenancyError(f"{self.registry_path} is damaged: {exc}") from None
        if registry.version != REGISTRY_VERSION:
            raise TenancyError(f"{self.registry_path}: unknown version {registry.version}")
        return registry

    # -- changing ---------------------------------------------------------------------------
    @contextmanager
    def _changing(self) -> Iterator[Registry]:
        _private_dirs(self.root)
        self.root.chmod(0o700)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            registry = self.load()
            yield registry
            self._ensure_control(registry)
            _write_private(self.registry_path, msgspec.json.format(msgspec.json.encode(registry)))
            from controller.natsserver.config import render_accounts

            _write_private(self.auth_conf_path, render_accounts(registry).encode())

    def _new_seed(self, path: Path) -> str:
        seed, public = new_user_seed()
        _write_private(path, seed + b"\n")
        return public

    def _ensure_control(self, registry: Registry) -> None:
        # The identities every secure setup needs, created once, on the first change.
        if not registry.system_key:
            registry.system_key = self._new_seed(self.system_seed())
        if not registry.control_controller_key:
            registry.control_controller_key = self._new_seed(self.control_controller_seed())

    def init(self) -> Registry:
        """Create the system and controller identities if missing."""
        with self._changing() as registry:
            pass
        return registry

    def add_tenant(self, tenant: str, *, linux_user: str | None = None) -> TenantRecord:
        validate_tenant(tenant)
        with self._changing() as registry:
            if tenant in registry.tenants:
                raise TenancyError(f"tenant {tenant!r} exists already")
            record = TenantRecord(
                controller_key=self._new_seed(self.tenant_controller_seed(tenant)),
                linux_user=linux_user,
                created_at=time.time(),
            )
            registry.tenants = {**registry.tenants, tenant: record}
        return record

    def ensure_tenants(self, tenants: list[str]) -> Registry:
        """Add whichever of ``tenants`` are missing (what `fleet up --tenants` needs)."""
        for tenant in tenants:
            if tenant not in self.load().tenants:
                self.add_tenant(tenant)
        return self.load()

    def add_host(self, tenant: str, host: str) -> Path:
        """Create a host's credentials; returns the seed file to hand to its agent."""
        validate_host(host)
        with self._changing() as registry:
            record = self._tenant(registry, tenant)
            if host in record.hosts:
                raise TenancyError(f"host {tenant}/{host} exists already")
            public = self._new_seed(self.host_seed(tenant, host))
            hosts = {**record.hosts, host: HostRecord(public_key=public, created_at=time.time())}
            registry.tenants = {
                **registry.tenants,
                tenant: msgspec.structs.replace(record, hosts=hosts),
            }
        return self.host_seed(tenant, host)

    def remove_host(self, tenant: str, host: str) -> RevokedHost:
        """Revoke a host: its seed is deleted and its key leaves the next rendered config."""
        with self._changing() as registry:
            record = self._tenant(registry, tenant)
            if host not in record.hosts:
                raise TenancyError(f"no host {tenant}/{validate_host(host)}")
            hosts = dict(record.hosts)
            gone = hosts.pop(host)
            revoked = RevokedHost(host=host, public_key=gone.public_key, revoked_at=time.time())
            registry.tenants = {
                **registry.tenants,
                tenant: msgspec.structs.replace(
                    record, hosts=hosts, revoked=[*record.revoked, revoked]
                ),
            }
            self.host_seed(tenant, host).unlink(missing_ok=True)
        return revoked

    def add_operator(self, name: str, role: Role, tenants: list[str]) -> Path:
        """Create an operator's credentials; returns the seed file to hand to that person."""
        validate_id(name, "operator")
        with self._changing() as registry:
            if name in registry.operators:
                raise TenancyError(f"operator {name!r} exists already")
            for tenant in tenants:
                self._tenant(registry, tenant)
            if role is not Role.ADMIN and not tenants:
                raise TenancyError(f"role {role.value} needs at least one --tenant")
            public = self._new_seed(self.operator_seed(name))
            record = OperatorRecord(
                public_key=public, role=role, tenants=sorted(set(tenants)), created_at=time.time()
            )
            registry.operators = {**registry.operators, name: record}
        return self.operator_seed(name)

    def ensure_admin(self, name: str) -> Path:
        """The admin `fleet up` creates for the local user, once; its seed file."""
        if name not in self.load().operators:
            self.add_operator(name, Role.ADMIN, [])
        return self.operator_seed(name)

    def remove_operator(self, name: str) -> RevokedOperator:
        """Revoke an operator: its seed is deleted and its key leaves the rendered config."""
        with self._changing() as registry:
            operators = dict(registry.operators)
            gone = operators.pop(validate_id(name, "operator"), None)
            if gone is None:
                raise TenancyError(f"no operator {name!r}")
            revoked = RevokedOperator(name=name, public_key=gone.public_key, revoked_at=time.time())
            registry.operators = operators
            registry.revoked_operators = [*registry.revoked_operators, revoked]
            self.operator_seed(name).unlink(missing_ok=True)
        return revoked

    @staticmethod
    def _tenant(registry: Registry, tenant: str) -> TenantRecord:
        try:
            return registry.tenants[validate_tenant(tenant)]
        except KeyError:
            raise TenancyError(f"no tenant {tenant!r} (fleet tenant add {tenant})") from None


def reload_server(pid_file: Path) -> int | None:
    """SIGHUP the nats-server whose pid file this is; returns the pid, None if not running."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    # A stale pid file may name a recycled pid: signal only a process that is nats-server.
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    if comm != "nats-server":
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    return pid
