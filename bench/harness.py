"""The parts every scenario runs against: an embedded nats-server, a real controller
subprocess (`fleet controller run --config`), and ways to read what the controller says
(`status`, `ps` through the API, transitions from its fleet.db). Everything we start is
stopped by the pid we started, nothing is ever killed by name."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from agent.config import AgentConfig
from agent.config import dump as dump_agent
from bench.common import cpu_seconds, wait_until
from common.natsconn import NatsSettings
from controller.cli.client import ClientError, ControllerClient
from controller.config import ControllerConfig, dump
from controller.natsserver.embedded import EmbeddedNats
from protocol.api import PsReply, PsRequest, StatusReply, StatusRequest
from protocol.reports_api import MetricsReply, MetricsRequest

T = TypeVar("T")
BIN = Path(sys.executable).parent

# `--pin`: the controller on a core of its own, everything else (this process, nats-server,
# generators, raw subscriber: they inherit it) on the others. None: no pinning.
_split: tuple[set[int], set[int]] | None = None


def split_cpus() -> dict[str, list[int]]:
    """Pin this process, and so whatever it starts from now on, to every CPU but the last;
    the controller gets the last (`Bench.start_controller`). Call before anything starts."""
    global _split
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise RuntimeError(f"--pin needs two CPUs; this process may use {cpus}")
    _split = ({cpus[-1]}, set(cpus[:-1]))
    os.sched_setaffinity(0, _split[1])
    return {"controller": sorted(_split[0]), "rest": sorted(_split[1])}


def api(url: str, fn: Callable[[ControllerClient], Awaitable[T]], timeout: float = 30.0) -> T:
    """Run one async function against the controller API with a fresh client."""

    async def main() -> T:
        async with ControllerClient(NatsSettings(servers=[url]), timeout=timeout) as client:
            return await fn(client)

    return anyio.run(main)


class Bench:
    """A temp dir with one nats-server and (at most) one controller process."""

    def __init__(self, tenants: list[str], interval_s: float, keep: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
        self.tenants = tenants
        self.interval_s = interval_s
        self.keep = keep or bool(os.environ.get("BENCH_KEEP"))
        self.nats = EmbeddedNats(self.tmp / "nats")
        self.controller: subprocess.Popen[bytes] | None = None
        self.controller_started_at = 0.0
        self.api_gone_s = 0.0  # total time status calls found no controller (reconnecting)
        self.heard = 0  # hosts the controller knew when the ramp ended

    # -- life -------------------------------------------------------------------------------
    def __enter__(self) -> Bench:
        self.nats.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_controller()
        self.nats.stop()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def url(self) -> str:
        return self.nats.url

    @property
    def data_dir(self) -> Path:
        return self.tmp / "controller"

    def controller_config(self, **kw: Any) -> ControllerConfig:
        interval = self.interval_s
        return ControllerConfig(
            tenants=self.tenants,
            nats=NatsSettings(servers=[self.url]),
            data_dir=str(kw.pop("data_dir", self.data_dir)),
            # Production defaults at a 5 s interval; scaled down with the interval for smoke runs.
            liveness_tick_s=min(0.5, interval / 5),
            restart_grace_s=3 * interval,
            persist_interval_s=min(2.0, interval / 2),
            **kw,
        )

    def start_controller(self, timeout: float = 60.0, **kw: Any) -> int:
        config = self.controller_config(**kw)
        path = self.tmp / "controller.toml"
        path.write_text(dump(config))
        log = (self.tmp / "controller.log").open("ab")
        self.controller_started_at = time.time()
        if _split is not None:
            os.sched_setaffinity(0, _split[0])  # the child inherits it, with every thread
        try:
            self.controller = subprocess.Popen(
                [str(BIN / "fleet"), "controller", "run", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if _split is not None:
                os.sched_setaffinity(0, _split[1])
            log.close()
        proc = self.controller
        wait_until(
            lambda: proc.poll() is not None or self.try_status() is not None,
            timeout,
            0.1,
            "controller API up",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"controller exited {proc.returncode}:\n{self.controller_log()}")
        return proc.pid

    def stop_controller(self, timeout: float = 30.0) -> float:
        """SIGTERM the controller we started and wait; returns how long it took to exit."""
        proc, self.controller = self.controller, None
        if proc is None or proc.poll() is not None:
            return 0.0
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return time.monotonic() - start

    @property
    def controller_pid(self) -> int:
        assert self.controller is not None
        return self.controller.pid

    def controller_log(self, lines: int = 40) -> str:
        path = self.tmp / "controller.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- reading the controller ---------------------------------------------------------------
    def status(self, timeout: float = 30.0, retry_s: float = 60.0) -> StatusReply:
        """`fleet status` through the API. While the controller is reconnecting (e.g. after
        nats-server cut it off as a slow consumer) there is nobody to answer: retry, and
        count how long the API was gone."""
        deadline = time.monotonic() + retry_s
        start = time.monotonic()
        for _ in range(100_000):
            try:
                reply = api(
                    self.url, lambda c: c.call("status", StatusRequest(), StatusReply), timeout
                )
            except ClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            if time.monotonic() - start > 1.0:
                self.api_gone_s += time.monotonic() - start
            return reply
        raise RuntimeError("unreachable")

    def lag_histogram(self) -> dict[str, float] | None:
        """The controller's heartbeat-lag histogram: cumulative count per bucket bound
        (seconds, as strings, "+Inf" last); None if it did not answer."""
        try:
            reply = api(self.url, lambda c: c.call("metrics", MetricsRequest(), MetricsReply), 10)
        except ClientError:
            return None
        [series] = reply.snapshot["fleet_heartbeat_lag_seconds"] or [{"buckets": {}}]
        return dict(series["buckets"])

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of the controller and of nats-server (0 for one not running)."""
        controller = self.controller.pid if self.controller else 0
        server = self.nats.process.pid if self.nats.process else 0
        return {"controller": cpu_seconds(controller), "nats_server": cpu_seconds(server)}

    def slow_consumer_events(self) -> int:
        """Times nats-server cut the controller off for not reading fast enough."""
        try:
            text = self.nats.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(
            1
            for line in text.splitlines()
            if "Slow Consumer" in line and "fleet-controller" in line
        )

    def try_status(self) -> StatusReply | None:
        try:
            return self.status(timeout=5.0, retry_s=0.0)
        except Exception:
            return None

    def ps_all(self, request: PsRequest | None = None) -> tuple[list[Any], dict[str, int], float]:
        """Every page of a ps listing through the API: (rows, hosts_by_state, seconds)."""

        async def pages(client: ControllerClient) -> tuple[list[Any], dict[str, int], float]:
            req = request or PsRequest()
            rows: list[Any] = []
            counts: dict[str, int] = {}
            cursor: int | None = 0
            start = time.perf_counter()
            for _ in range(1_000_000):  # bounded: a page always advances the cursor
                if cursor is None:
                    break
                reply = await client.call("ps", _with_cursor(req, cursor), PsReply)
                rows.extend(reply.rows)
                counts = counts or reply.hosts_by_state
                cursor = reply.next_cursor
            return rows, counts, time.perf_counter() - start

        return api(self.url, pages, timeout=60.0)

    def transitions(
        self, since: float = 0.0
    ) -> list[tuple[str, str, str | None, str, float, float]]:
        """(tenant, host, old, new, at, silent_s) rows of the controller's fleet.db."""
        path = self.data_dir / "fleet.db"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(
                "SELECT tenant, host, old_state, new_state, at, coalesce(silent_s, -1)"
                " FROM host_transitions WHERE at >= ? ORDER BY id",
                (since,),
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet
        finally:
            db.close()

    def false_alarms(self, since: float, exclude: set[tuple[str, str]] | None = None) -> int:
        """suspect/down transitions since ``since`` for hosts that were never stopped."""
        skip = exclude or set()
        return sum(
            1
            for t, h, _old, new, _at, _s in self.transitions(since)
            if new in ("suspect", "down") and (t, h) not in skip
        )


def _with_cursor(req: PsRequest, cursor: int) -> PsRequest:
    import msgspec

    return msgspec.structs.replace(req, cursor=cursor)


def cli(
    url: str, *args: str, timeout: float = 120.0
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run the `fleet` CLI; (wall seconds, completed process). Output is kept as bytes."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "fleet"), *args],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "FLEET_NATS_URL": url, "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - start, result


def start_agent(b: Bench, config: AgentConfig) -> subprocess.Popen[bytes]:
    """A real `fleet-agent` for ``config``, logging to the bench's temp dir."""
    path = b.tmp / "agent.toml"
    path.write_text(dump_agent(config))
    log = (b.tmp / "agent.log").open("ab")
    try:
        return subprocess.Popen(
            [str(BIN / "fleet-agent"), "run", "--config", str(path)]
            + (["--allow-root"] if os.geteuid() == 0 else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        log.close()


def stop_agent(agent: subprocess.Popen[bytes], socket: str) -> None:
    """Stop the agent we started, by its pid, then the tmux server on the bench's own socket."""
    agent.terminate()
    try:
        agent.wait(20)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
