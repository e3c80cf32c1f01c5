"""A second host for tests: a network namespace joined to this one by a veth pair, with a
real OpenSSH server in it. Everything created here is removed by the context managers, even
when the test fails: processes by pid (the namespace's own list), then the namespace, then
the host-side link."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.deploy.steps import PyTarget, build_wheelhouse
from controller.natsserver.embedded import EmbeddedNats
from tests.support.fleet import Fleet

INTERVAL = 0.5  # heartbeat interval of deployed test agents


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed (./dev.sh setup installs it)"
    probe = f"afprobe{uuid.uuid4().hex[:6]}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "`ip netns add` is not permitted here"
    _ip("netns", "delete", probe, check=False)
    return None


@dataclass
class Netns:
    name: str
    host_if: str
    ns_if: str
    host_addr: str  # this side of the veth: where the namespace reaches NATS
    ns_addr: str  # the second host's address

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=check
        )

    def popen(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.name, *argv],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def set_link(self, up: bool) -> None:
        """Cut or restore the second host's only link, from its side."""
        self.run("ip", "link", "set", self.ns_if, "up" if up else "down")

    def pids(self) -> list[int]:
        result = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in result.stdout.split()]

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGTERM every process in the namespace (all started by this test), SIGKILL the rest."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.pids():
                return


def _free_subnet() -> tuple[str, str]:
    used = _ip("-o", "-4", "addr").stdout
    while True:
        third, fourth = random.randrange(0, 256), random.randrange(0, 64) * 4
        prefix = f"10.213.{third}."
        if prefix not in used:
            return f"{prefix}{fourth + 1}", f"{prefix}{fourth + 2}"


@contextmanager
def network_namespace() -> Iterator[Netns]:
    tag = uuid.uuid4().hex[:8]
    host_addr, ns_addr = _free_subnet()
    ns = Netns(f"af-{tag}", f"afh{tag}", f"afn{tag}", host_addr, ns_addr)
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{host_addr}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        ns.run("ip", "addr", "add", f"{ns_addr}/30", "dev", ns.ns_if)
        ns.run("ip", "link", "set", ns.ns_if, "up")
        ns.run("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        ns.kill_all()
        _ip("netns", "delete", ns.name, check=False)
        _ip("link", "delete", ns.host_if, check=False)  # gone with its peer, unless half-made


@dataclass
class Sshd:
    ns: Netns
    directory: Path
    client_key: Path
    known_hosts: Path  # holds the server's key: strict checking works without TOFU
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"root@{self.ns.ns_addr}"

    def log(self) -> str:
        return (self.directory / "sshd.log").read_text(errors="replace")


def _banner(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=0.5) as sock:
            sock.settimeout(1.0)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


@contextmanager
def sshd(ns: Netns, directory: Path) -> Iterator[Sshd]:
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
    (directory / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    known = directory / "known_hosts"
    known.write_text(f"{ns.ns_addr} {host_key.with_suffix('.pub').read_text()}")
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "Port 22",
                f"ListenAddress {ns.ns_addr}",
                f"HostKey {host_key}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
    proc = ns.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], directory / "sshd.log")
    server = Sshd(ns, directory, client_key, known, proc)
    try:
        deadline = time.monotonic() + 10
        while not _banner(ns.ns_addr, 22):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sshd did not start:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class SecondHost:
    """A controller here, NATS on this side of the veth, an sshd on the other side."""

    ns: Netns
    ssh: Sshd
    fleet: Fleet
    tmp: Path
    tenant: str
    tmux_socket: str
    wheelhouse: Path

    @property
    def remote_dir(self) -> Path:
        return self.tmp / "remote"

    def deploy(
        self, *extra: str, roster: Path | None = None, build: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``build``: build the wheels of the running source, as an operator's deploy does;
        otherwise deploy a snapshot of them, immune to edits of the tree during the test."""
        args = [
            "deploy",
            self.ssh.target,
            "--tenant",
            self.tenant,
            "--host-id",
            "h2",
            "--no-systemd",
            "--nats-url",
            self.fleet.nats.url,
            "--ssh-key",
            str(self.ssh.client_key),
            "--known-hosts",
            str(self.ssh.known_hosts),
            "--remote-dir",
            str(self.remote_dir),
            "--tmux-socket",
            self.tmux_socket,
            "--heartbeat-interval",
            str(INTERVAL),
            "--allow-root",  # the namespace's only login is root; its sessions run as root
            "--timeout",
            "40",
            *(["--roster", str(roster)] if roster else []),
            *([] if build else ["--wheelhouse", str(self.wheelhouse)]),
            *extra,
        ]
        return self.fleet.cli(*args, timeout=240)


def stub_roster(path: Path, work: str = "0.2") -> Path:
    path.write_text(
        "[[sessions]]\n"
        'name = "coder"\nruntime = "stub"\n'
        f'env = {{ FLEET_STUB_WORK_SECONDS = "{work}", FLEET_STUB_STEPS = "2" }}\n'
    )
    return path


def snapshot_wheelhouse(dest: Path) -> Path:
    """The running source's wheels (cached build), copied: edits of the tree made while the
    test runs cannot change what a later deploy in the same test ships."""
    built = build_wheelhouse(PyTarget.local())
    for wheel in built.wheels:
        shutil.copy2(built.directory / wheel, dest / wheel)
    return dest


@contextmanager
def second_host_env(tmp: Path, wheelhouse: Path, **controller: Any) -> Iterator[SecondHost]:
    """Namespace + sshd + NATS on the veth + a controller for one fresh tenant."""
    socket_name = f"fleet-test-{uuid.uuid4().hex[:10]}"
    with network_namespace() as ns:
        server = EmbeddedNats(tmp / "nats", host=ns.host_addr)
        server.start()
        fleet = Fleet(server, tmp)
        try:
            with sshd(ns, tmp / "sshd") as ssh:
                tenant = f"t{uuid.uuid4().hex[:8]}"
                fleet.start_controller(fleet.controller_config([tenant], **controller))
                host = SecondHost(ns, ssh, fleet, tmp, tenant, socket_name, wheelhouse)
                try:
                    yield host
                except BaseException:
                    # Shown by pytest with the failure: what the two daemons said last.
                    for log in (host.remote_dir / "logs" / "agent.log", tmp / "controller.log"):
                        if log.exists():
                            tail = log.read_text(errors="replace").splitlines()[-40:]
                            print(f"--- {log}\n" + "\n".join(tail))
                    raise
        finally:
            # The deployed agent runs in the namespace: network_namespace() kills it by pid,
            # after its tmux server is stopped by socket here.
            subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True)
            fleet.stop_all()
            server.stop()
