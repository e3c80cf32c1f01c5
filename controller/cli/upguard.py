"""What makes `fleet up` safe to run on a user's machine: one `fleet up` per data dir (an
exclusive lock that names its holder), and a record of what it created in tmux, so that at
its end it removes exactly that and nothing of the user's.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from agent.discovery.tmux import Tmux, TmuxError

log = logging.getLogger(__name__)

LOCK_NAME = "fleet-up.lock"


class UpError(Exception):
    """Why `fleet up` cannot start or had to stop: one line for the user, exit 2."""


@dataclass
class DataDirLock:
    """`flock` on ``<data>/fleet-up.lock``, held for the life of the process.

    The kernel drops the lock when the process dies however it dies (kill -9 too), so there
    is no stale lock to clean up. The file's content (pid, start, command) only says who
    holds it; the lock is the truth. The fd is close-on-exec: no child inherits the lock.
    """

    data_dir: Path
    fd: int | None = None

    @property
    def path(self) -> Path:
        return self.data_dir / LOCK_NAME

    def acquire(self, command: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UpError(f"cannot lock data dir {self.data_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UpError(
                f"data dir {self.data_dir} is in use by another fleet up ({self.holder()}): "
                "stop that one, or pass another --data-dir"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        record = {"pid": os.getpid(), "started": started, "command": command}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self.fd = fd

    def holder(self) -> str:
        try:
            record = json.loads(self.path.read_text())
            return f"pid {record['pid']}, started {record['started']}: {record['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its pid is not recorded yet"  # it holds the lock and is writing who it is

    def release(self) -> None:
        # Closing drops the lock. The file stays: unlinking it would let a third `fleet up`
        # lock a new file while a second one still waits on the old one.
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _server(tmux: Tmux) -> tuple[int | None, set[str]]:
    """The pid of the tmux server on the socket (None: none runs) and its session ids."""
    try:
        pid = (await tmux.run("display-message", "-p", "#{pid}")).strip()
        out = await tmux.run("list-sessions", "-F", "#{session_id}")
    except TmuxError as exc:
        text = str(exc)
        if "no server running" in text or "error connecting" in text or "No such file" in text:
            return None, set()
        raise
    return (int(pid) if pid.isdigit() else None), set(out.split())


class ClaimRecord:
    """``<data>/tmux-claims.json``: what the demo of this data dir created, per socket, kept
    while it runs, so that a `fleet up` killed with -9 leaves its successor the list of what
    is its to remove (only while the same tmux server, by pid, still holds it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, dict] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self, socket: str, server_pid: int | None) -> tuple[bool, list[str]]:
        """(the server was started by a demo of ours, the session ids it created)."""
        entry = self.data.get(socket)
        if (
            not isinstance(entry, dict)
            or server_pid is None
            or entry.get("server_pid") != server_pid
        ):
            return False, []
        return bool(entry.get("started_server")), [str(x) for x in entry.get("sessions", [])]

    def put(self, socket: str, entry: dict | None) -> None:
        if entry is None:
            self.data.pop(socket, None)
        else:
            self.data[socket] = entry
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)


@dataclass
class SocketClaim:
    """What `fleet up` found on one tmux socket before its agent ran, and what it may undo.

    ``remove`` is true for the demo: its sessions belong to `fleet up`. A user's roster
    (adopted or launched) is never removed, as when `fleet-agent` stops.
    """

    tmux: Tmux  # the agent's own: it records (server pid, session id) of what it created
    record: ClaimRecord
    server_before: bool  # a tmux server we did not start answered before our agent ran
    remove: bool
    inherited: list[tuple[int, str]] = field(default_factory=list)  # a crashed demo's

    @classmethod
    async def take(cls, tmux: Tmux, record: ClaimRecord, remove: bool) -> SocketClaim:
        pid, sessions = await _server(tmux)
        started, prior = record.get(tmux.socket_name, pid) if remove else (False, [])
        inherited = [(pid, sid) for sid in prior if pid is not None and sid in sessions]
        foreign = len(sessions) - len(inherited)
        if pid is not None and foreign:
            log.info(
                "tmux -L %s already runs %d session(s) not ours: they stay",
                tmux.socket_name,
                foreign,
            )
        claim = cls(tmux, record, pid is not None and not started, remove, inherited)
        claim.save()
        return claim

    def mine(self) -> list[tuple[int, str]]:
        return [*self.inherited, *self.tmux.created]

    def save(self) -> None:
        """Record what is ours so far (called again whenever the agent created more)."""
        if not self.remove:
            return
        mine = self.mine()
        pids = {pid for pid, _ in mine}
        if len(pids) > 1:  # the server was replaced meanwhile: only the newest one counts
            newest = mine[-1][0]
            mine = [(p, sid) for p, sid in mine if p == newest]
        if not mine:
            return
        entry = {
            "server_pid": mine[-1][0],
            "started_server": not self.server_before,
            "sessions": [sid for _, sid in mine],
        }
        self.record.put(self.tmux.socket_name, entry)

    async def keep_recorded(self) -> None:
        """Save the record whenever the agent created a session (a task while fleet up runs)."""
        seen = len(self.tmux.created)
        while True:
            await anyio.sleep(0.5)
            if len(self.tmux.created) != seen:
                seen = len(self.tmux.created)
                self.save()

    async def undo(self) -> list[str]:
        """Kill the sessions we created (by id, on the server that holds them), then the
        server if we started it and nothing else runs on it. Returns what was removed."""
        if not self.remove:
            return []
        pid, sessions = await _server(self.tmux)
        if pid is None:
            self.record.put(self.tmux.socket_name, None)
            return []
        mine = [sid for p, sid in self.mine() if p == pid and sid in sessions]
        for sid in mine:
            await self.tmux.run("kill-session", "-t", sid, check=False)
        removed = [f"{self.tmux.socket_name}:{sid}" for sid in mine]
        if not self.server_before:
            pid, left = await _server(self.tmux)
            if pid is not None and not left:
                await self.tmux.run("kill-server", check=False)
                removed.append(f"tmux -L {self.tmux.socket_name}")
            elif left:
                log.info(
                    "tmux -L %s keeps running: %d session(s) there are not ours",
                    self.tmux.socket_name,
                    len(left),
                )
        self.record.put(self.tmux.socket_name, None)
        return removed
