"""The remote side of `fleet deploy`: one SSH connection, one probe, and the few commands
that change the host. Every failure is a StepError naming the step and the remote output."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from controller.deploy.steps import PyTarget, StepError

STOP_TIMEOUT_S = 20.0

# Sent to the remote interpreter as text (a module here only so linters read it).
PROBE = (Path(__file__).parent / "probe.py").read_text()


@dataclass(frozen=True)
class Target:
    user: str | None
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> Target:
        user, _, rest = text.rpartition("@")
        host, port = rest, 22
        if rest.startswith("[") and "]:" in rest:  # [addr]:port, as in known_hosts
            host, port = rest[1:].split("]:")[0], int(rest.rsplit(":", 1)[1])
        elif rest.count(":") == 1:
            host, port_text = rest.split(":")
            port = int(port_text)
        return cls(user or None, host, port)

    def __str__(self) -> str:
        where = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{self.user}@{where}" if self.user else where


@dataclass(frozen=True)
class Probe:
    raw: dict[str, Any]

    @property
    def target(self) -> PyTarget:
        libc_name, libc_ver = self.raw["libc"]
        glibc = None
        if libc_name == "glibc" and libc_ver:
            major, minor = libc_ver.split(".")[:2]
            glibc = (int(major), int(minor))
        return PyTarget(tuple(self.raw["python"]), self.raw["machine"], glibc)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


@dataclass(frozen=True)
class SshOptions:
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    accept_new_host_key: bool = False
    keys: tuple[Path, ...] = ()
    connect_timeout_s: float = 15.0


def _known_hosts_path(opts: SshOptions) -> Path:
    return opts.known_hosts or Path.home() / ".ssh" / "known_hosts"


def _is_known(path: Path, target: Target) -> bool:
    if not path.exists():
        return False
    known = asyncssh.read_known_hosts(str(path))
    port = target.port if target.port != 22 else None
    host_keys, ca_keys, *_ = known.match(target.host, target.host, port)
    return bool(host_keys or ca_keys)


async def connect(target: Target, opts: SshOptions) -> asyncssh.SSHClientConnection:
    """Strict host-key checking against known_hosts; trust on first use only when asked, and
    never for a host that is known with another key."""
    path = _known_hosts_path(opts)
    known = _is_known(path, target)
    if not known and not opts.accept_new_host_key:
        raise StepError(
            "connect",
            f"{target.host} is not in {path}; add its key there, or pass --accept-new-host-key "
            "to trust it on first use",
        )
    kwargs: dict[str, Any] = {
        "port": target.port,
        "known_hosts": str(path) if known else None,
        "connect_timeout": opts.connect_timeout_s,
    }
    if target.user:
        kwargs["username"] = target.user
    if opts.keys:
        kwargs["client_keys"] = [str(k) for k in opts.keys]
    try:
        conn = await asyncssh.connect(target.host, **kwargs)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise StepError("connect", f"ssh to {target}: {exc or type(exc).__name__}") from None
    if not known:
        key = conn.get_server_host_key()
        if key is not None:
            name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(f"{name} {key.export_public_key('openssh').decode().strip()}\n")
    return conn


class Remote:
    """Commands and files on one host, each tagged with the deploy step it belongs to."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self._sftp: asyncssh.SFTPClient | None = None

    async def run(self, step: str, command: str, what: str, limit_s: float = 300) -> str:
        try:
            result = await self.conn.run(command, check=False, timeout=limit_s)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise StepError(step, f"{what}: {exc or type(exc).__name__}") from None
        out = _text(result.stdout) + _text(result.stderr)
        if result.exit_status != 0:
            raise StepError(step, f"{what} (exit status {result.exit_status})", out[-4000:])
        return _text(result.stdout)

    async def probe(self, python: str, tenant: str, remote_dir: str, mode: str) -> Probe:
        argv = [python, "-c", PROBE, tenant, remote_dir, mode]
        out = await self.run("probe", shlex.join(argv), f"running {python} on the host")
        try:
            return Probe(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise StepError("probe", "unreadable probe output", out) from None

    async def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            self._sftp = await self.conn.start_sftp_client()
        return self._sftp

    async def write(self, step: str, path: str, content: str, mode: int = 0o644) -> None:
        """Write atomically (temp file, then rename) with ``mode`` from the first byte."""
        sftp = await self.sftp()
        tmp = f"{path}.fleet-tmp"
        try:
            await sftp.makedirs(str(Path(path).parent), exist_ok=True)
            attrs = asyncssh.SFTPAttrs(permissions=mode)
            async with sftp.open(tmp, "wb", attrs) as fh:
                await fh.write(content.encode())
            await sftp.chmod(tmp, mode)  # the umask may have trimmed the create mode
            await sftp.posix_rename(tmp, path)
        except (asyncssh.Error, OSError) as exc:
            raise StepError(step, f"writing {path}: {exc}") from None

    async def upload(self, step: str, files: list[Path], directory: str) -> None:
        sftp = await self.sftp()
        try:
            await sftp.makedirs(directory, exist_ok=True)
            for file in files:
                await sftp.put(str(file), f"{directory}/{file.name}.fleet-tmp")
                await sftp.posix_rename(
                    f"{directory}/{file.name}.fleet-tmp", f"{directory}/{file.name}"
                )
        except (asyncssh.Error, OSError) as exc:
            raise StepError(step, f"uploading to {directory}: {exc}") from None

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()
        await self.conn.wait_closed()


async def start_supervised(remote: Remote, base: str, *, running: bool, restart: bool) -> None:
    q = shlex.quote
    pidfile = f"{base}/supervisor.pid"
    if restart:
        stop = (
            f"pid=$(cat {q(pidfile)}); kill -TERM $pid; i=0; "
            f"while kill -0 $pid 2>/dev/null && [ $i -lt {int(STOP_TIMEOUT_S * 10)} ]; "
            "do sleep 0.1; i=$((i+1)); done; ! kill -0 $pid 2>/dev/null"
        )
        await remote.run("service", f"sh -c {q(stop)}", "stopping the running agent")
    if restart or not running:
        # setsid: the supervisor outlives this SSH session and has no terminal.
        start = (
            f"cd {q(base)} && mkdir -p logs && rm -f {q(pidfile)} && "
            f"setsid sh fleet-supervise.sh {q(base)} </dev/null >/dev/null 2>&1 & "
            f"i=0; while [ ! -s {q(pidfile)} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
            f"test -s {q(pidfile)}"
        )
        await remote.run("service", f"sh -c {q(start)}", "starting the agent supervisor")


async def start_unit(
    remote: Remote,
    tenant: str,
    *,
    user_manager: bool,
    enabled: bool,
    unit_changed: bool,
    restart: bool,
) -> None:
    ctl = "systemctl --user" if user_manager else "systemctl"
    unit = f"fleet-agent@{tenant}"
    if unit_changed:
        await remote.run("service", f"{ctl} daemon-reload", "systemctl daemon-reload")
    if user_manager:
        # Without lingering a user's units stop at logout and never start at boot.
        await remote.run("service", "loginctl enable-linger || true", "loginctl enable-linger")
    if not enabled:
        await remote.run("service", f"{ctl} enable {unit}", f"enabling {unit}")
    verb = "restart" if restart else "start"
    await remote.run("service", f"{ctl} {verb} {unit}", f"{verb} {unit}")


async def agent_log(remote: Remote, base: str, mode: str, tenant: str) -> str:
    if mode == "supervisor":
        cmd = f"tail -n 30 {shlex.quote(base)}/logs/agent.log"
    else:
        flag = "--user-unit" if mode == "user" else "-u"
        cmd = f"journalctl {flag} fleet-agent@{tenant} -n 30 --no-pager"
    try:
        return await remote.run("heartbeat", cmd, "reading the agent log")
    except StepError as exc:
        return exc.output


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
