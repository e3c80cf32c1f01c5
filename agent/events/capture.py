"""Pane output capture: `tmux pipe-pane` appends each pane's raw output to a log file; the
agent reads it from a persisted byte offset through a terminal emulation of the pane
(`agent.events.pane_reader`), so blocks are read off what the terminal shows.

Crash safety. The emulated screen at a byte offset depends on every byte before it, and a
block is known once it is whole on that screen. So the persisted offset is simply the end of
the last read, committed with the events that read produced; a reader that starts at an
offset first *primes* its emulator by replaying up to `PRIME_BYTES` before it without
reporting anything (it remembers the blocks it sees). The screen is then what it was, a block
completed before the offset was already committed and is not reported again (it is
remembered), and a block completed after it (even one begun before) is reported once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.events.pane_reader import PaneReader
from protocol.emission import Result

# One read feeds at most this much to the emulator (~0.6 s of CPU per MiB, bench/emission.py),
# so a pass over many sessions stays short; a backlog is caught up over a few passes.
READ_CHUNK = 256 * 1024
# A restart replays this much before its offset to rebuild the screen and what was seen.
PRIME_BYTES = 256 * 1024
DEFAULT_SIZE = (120, 40)  # until tmux tells the pane's size


@dataclass
class PaneLog:
    session: str
    path: Path
    begin: str
    end: str
    offset: int = 0  # next byte to read
    size: tuple[int, int] = DEFAULT_SIZE  # pane columns, rows
    safe_offset: int = 0  # where a restart must resume: everything before it was reported
    reader: PaneReader = field(init=False)

    def __post_init__(self) -> None:
        self.safe_offset = self.offset
        self.reader = self._primed(self.offset)

    def read(self, now: float) -> list[Result]:
        """Everything new in the log since the last read, as parser results."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # the log was truncated or replaced: start over
            self.offset = self.safe_offset = 0
            self.reader = self._new()
        results: list[Result] = []
        if size > self.offset:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(min(READ_CHUNK, size - self.offset))
            results += self.reader.feed(data, now)
            self.offset += len(data)
        results += self.reader.tick(now)
        self.safe_offset = self.offset
        return results

    def rewind(self, offset: int) -> None:
        """Forget everything read past ``offset`` (it could not be committed)."""
        self.offset = self.safe_offset = offset
        self.reader = self._primed(offset)

    def resize(self, columns: int, rows: int) -> None:
        """The pane's size (tmux's list-panes): wrapping is read at the width it happened."""
        if (columns, rows) != self.size and columns > 1 and rows > 1:
            self.size = (columns, rows)
            self.reader.resize(columns, rows)

    def _new(self) -> PaneReader:
        return PaneReader(self.begin, self.end, *self.size)

    def _primed(self, offset: int) -> PaneReader:
        reader = self._new()
        start = max(0, offset - PRIME_BYTES)
        if offset <= start:
            return reader
        try:
            with self.path.open("rb") as f:
                f.seek(start)
                data = f.read(offset - start)
        except FileNotFoundError:
            return reader
        reader.prime(data)
        return reader


def log_path(logs_dir: Path, session: str) -> Path:
    return logs_dir / f"{session}.log"


def pipe_command(path: Path) -> str:
    """The shell command `pipe-pane` runs (as the tmux server's user): the log is 0600 (what a
    pane prints may be a secret), also one an older agent created 0644."""
    quoted = "'" + str(path).replace("'", "'\\''") + "'"
    return f"umask 077; chmod 600 {quoted} 2>/dev/null; exec cat >> {quoted}"


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


@dataclass
class CaptureSet:
    """Every session's PaneLog, with offsets that resume where the outbox says."""

    logs_dir: Path
    logs: dict[str, PaneLog] = field(default_factory=dict)

    def track(
        self,
        session: str,
        begin: str,
        end: str,
        persisted: tuple[str, int] | None,
        size: tuple[int, int] | None = None,
    ) -> PaneLog:
        log = self.logs.get(session)
        if log is not None:
            if size is not None:
                log.resize(*size)
            return log
        path = log_path(self.logs_dir, session)
        if persisted is not None and persisted[0] == str(path):
            offset = persisted[1]
        else:
            # Never read before: only what the pane prints from now on is ours to report
            # (what it printed before still primes the screen).
            offset = file_size(path)
        log = self.logs[session] = PaneLog(
            session, path, begin, end, offset=offset, size=size or DEFAULT_SIZE
        )
        return log

    def read_all(self, now: float) -> dict[str, list[Result]]:
        return {name: log.read(now) for name, log in self.logs.items()}

    def offsets(self) -> dict[str, tuple[str, int]]:
        return {name: (str(log.path), log.safe_offset) for name, log in self.logs.items()}
