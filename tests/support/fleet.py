"""What the tests share: `wait_for` (conditions with deadlines, never sleep-and-hope), the daemons
as real subprocesses stopped by the pid we started (never by name), and `Fleet`, the factory of
agents, controllers and CLI calls against one nats-server. The fixtures are in tests/conftest.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from agent.config import AgentConfig, SessionSpec, dump
from common.natsconn import NatsSettings
from controller.cli.client import ControllerClient
from controller.config import ControllerConfig
from controller.config import dump as dump_controller
from controller.natsserver.embedded import EmbeddedNats
from protocol.api import PS, PsRequest

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_for(
    predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}; last={last!r}"
    )


@dataclass
class Proc:
    """A daemon we started; stopped by its pid."""

    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> Proc:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL past the timeout); returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Fleet:
    """Factories for agents and controllers against one nats-server, plus the CLI."""

    nats: EmbeddedNats
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def settings(self) -> NatsSettings:
        return NatsSettings(servers=[self.nats.url])

    def agent_config(
        self, tenant: str, host: str, socket: str, sessions: list[SessionSpec], **kw: Any
    ) -> AgentConfig:
        return AgentConfig(
            tenant=tenant,
            host=host,
            nats=self.settings,
            tmux_socket=socket,
            state_dir=str(self.tmp / f"agent-{tenant}-{host}"),
            heartbeat_interval_s=kw.pop("heartbeat_interval_s", 0.5),
            # Tests run as root (CI does): the sessions of these test fleets may too.
            allow_root=kw.pop("allow_root", True),
            poll_interval_s=kw.pop("poll_interval_s", 0.25),
            sessions=sessions,
            **kw,
        )

    def start_agent(self, config: AgentConfig) -> Proc:
        path = self.tmp / f"agent-{config.tenant}-{config.host}.toml"
        path.write_text(dump(config))
        proc = Proc(
            [str(BIN / "fleet-agent"), "run", "--config", str(path), "--log-level", "debug"],
            self.tmp / f"agent-{config.tenant}-{config.host}.log",
        ).start()
        self.procs.append(proc)
        return proc

    def controller_config(self, tenants: list[str], **kw: Any) -> ControllerConfig:
        return ControllerConfig(
            tenants=tenants,
            nats=self.settings,
            data_dir=str(self.tmp / "controller"),
            liveness_tick_s=kw.pop("liveness_tick_s", 0.1),
            restart_grace_s=kw.pop("restart_grace_s", 3.0),
            persist_interval_s=kw.pop("persist_interval_s", 0.5),
            **kw,
        )

    def start_controller(self, config: ControllerConfig) -> Proc:
        path = self.tmp / "controller.toml"
        path.write_text(dump_controller(config))
        proc = Proc(
            [
                str(BIN / "fleet"),
                "controller",
                "run",
                "--config",
                str(path),
                "--log-level",
                "debug",
            ],
            self.tmp / "controller.log",
        ).start()
        self.procs.append(proc)
        wait_for(
            lambda: self.cli("status").returncode == 0 or proc.popen.poll() is not None,
            timeout=20,
            what="controller API up",
        )
        assert proc.popen.poll() is None, proc.log()
        return proc

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "fleet"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "FLEET_NATS_URL": self.nats.url, "COLUMNS": "200"},
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def ps(self, *args: str) -> list[dict[str, Any]]:
        result = self.cli("ps", "--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def api_ps(self, tenant: str) -> list[dict[str, Any]]:
        """The rows `ps --json --tenant` prints, asked in this process: for polls many times
        a second, where a CLI process per poll (1-2 s to start on a loaded box) would set
        the pace instead of the fleet."""

        async def main() -> Any:
            settings = NatsSettings(servers=[self.nats.url])
            async with ControllerClient(settings, timeout=10.0) as client:
                return await client.call(PS, PsRequest(tenant=tenant))

        return msgspec.to_builtins(anyio.run(main).rows)  # type: ignore[no-any-return]

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def end_tmux_servers(name: str) -> list[str]:
    """End the tmux server on socket ``name`` and on every socket derived from it
    (`<name>-h1`, `<name>-top`): a test's own, since ``name`` holds a random token no one
    else uses. Any other socket is left alone. Returns the sockets it asked to end."""
    tmpdir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
    derived = sorted(p.name for p in tmpdir.glob(f"{name}-*")) if tmpdir.is_dir() else []
    for socket in (name, *derived):
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    return [name, *derived]


def rows_by_session(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["session"]["name"]: r for r in rows if r["session"]}
