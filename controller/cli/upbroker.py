"""`fleet up`'s broker is watched: a nats-server that dies while the fleet runs is restarted
on the same port and store, with backoff, and the controller and agents reconnect by
themselves (nats-py's reconnect loop, common/natsconn.py). If it does not come back after
``len(RESTART_DELAYS_S)`` attempts in a row, `fleet up` stops everything and exits 2 with one
line: never a fleet that looks up while its broker is gone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio

from common.signals import ExitFlags
from controller.natsserver.embedded import EmbeddedNats, EmbeddedNatsError

log = logging.getLogger(__name__)

RESTART_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # ~15 s of trying before giving up
STABLE_AFTER_S = 60.0  # a server up this long starts the count of attempts over
POLL_S = 0.2


@dataclass
class BrokerWatch:
    server: EmbeddedNats
    down: str | None = None  # why NATS is down right now (None: it runs)
    failed: str | None = None  # why `fleet up` gave up on it
    restarts: int = 0

    async def run(self, flags: ExitFlags) -> None:
        attempt, started = 0, time.monotonic()
        while not flags.should_exit.is_set():
            proc = self.server.process
            if proc is not None and proc.poll() is None:
                with anyio.move_on_after(POLL_S):
                    await flags.should_exit.wait()
                continue
            if time.monotonic() - started >= STABLE_AFTER_S:
                attempt = 0
            pid = proc.pid if proc else None
            self.down = f"nats-server (pid {pid}) died: {_exit(proc.returncode if proc else None)}"
            self.server.stop()  # forget the dead process
            log.error("%s; restarting it on %s", self.down, self.server.url)
            again = await self._restart(attempt, flags)
            if again is None:
                return
            attempt = again
            started = time.monotonic()

    async def _restart(self, attempt: int, flags: ExitFlags) -> int | None:
        """Start the server again: the attempts used so far, None when `fleet up` is stopping
        or gave up."""
        while attempt < len(RESTART_DELAYS_S):
            with anyio.move_on_after(RESTART_DELAYS_S[attempt]):
                await flags.should_exit.wait()
            if flags.should_exit.is_set():
                return None
            attempt += 1
            try:
                # In the event loop's thread, which lives as long as `fleet up`: the server's
                # parent-death signal follows the thread that started it.
                await self.server.start_async()
            except EmbeddedNatsError as exc:
                self.server.stop()
                log.error("restart %d of nats-server failed: %s", attempt, str(exc).split("\n")[0])
                continue
            self.restarts += 1
            log.warning(
                "nats-server restarted (pid %s, restart %d); clients reconnect",
                self.server.pid,
                self.restarts,
            )
            self.down = None
            return attempt
        self.failed = (
            f"{self.down}, and {attempt} restart(s) failed (see {self.server.log_path}): "
            "stopped the fleet"
        )
        flags.should_exit.set()
        return None


def _exit(code: int | None) -> str:
    if code is None:
        return "gone"
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
