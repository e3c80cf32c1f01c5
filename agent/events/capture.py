"""Pane output capture: `tmux pipe-pane` appends each pane's raw output to a log file; the
agent reads it from a persisted byte offset and feeds the emission parser line by line.

The offset that is persisted is a *safe* one: the end of the last complete line outside an
emission block, or the start of the block still open. Replaying from it after a crash
rebuilds exactly the blocks whose events were not yet committed, and no others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from protocol.emission import EmissionParser, Result

READ_CHUNK = 1024 * 1024
# A "line" longer than this is fed in pieces, so one endless line cannot hold memory.
MAX_LINE_BYTES = 256 * 1024


@dataclass
class PaneLog:
    session: str
    path: Path
    begin: str
    end: str
    offset: int = 0  # next byte to read
    safe_offset: int = 0  # where a restart must resume
    parser: EmissionParser = field(init=False)
    _block_start: int = 0

    def __post_init__(self) -> None:
        self.parser = EmissionParser(self.begin, self.end)
        self.safe_offset = self.offset

    def read(self, now: float) -> list[Result]:
        """Everything new in the log since the last read, as parser results."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # the log was truncated or replaced: start over
            self.offset = self.safe_offset = self._block_start = 0
            self.parser = EmissionParser(self.begin, self.end)
        results: list[Result] = []
        if size > self.offset:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(min(READ_CHUNK, size - self.offset))
            results += self._consume(data, now)
        results += self.parser.check_timeout(now)
        if not self.parser.in_block:
            self.safe_offset = self.offset
        return results

    def rewind(self, offset: int) -> None:
        """Forget everything read past ``offset`` (it could not be committed)."""
        self.offset = self.safe_offset = self._block_start = offset
        self.parser = EmissionParser(self.begin, self.end)

    def _consume(self, data: bytes, now: float) -> list[Result]:
        results: list[Result] = []
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                if len(data) - pos < MAX_LINE_BYTES:
                    break  # an incomplete line: wait for the rest
                nl = pos + MAX_LINE_BYTES - 1
            line = data[pos : nl + 1]
            was_in_block = self.parser.in_block
            results += self.parser.feed(line.decode("utf-8", errors="replace"), now)
            if self.parser.in_block and not was_in_block:
                self._block_start = self.offset + pos
            pos = nl + 1
            if not self.parser.in_block:
                self.safe_offset = self.offset + pos
            else:
                self.safe_offset = self._block_start
        self.offset += pos
        return results


def log_path(logs_dir: Path, session: str) -> Path:
    return logs_dir / f"{session}.log"


def pipe_command(path: Path) -> str:
    quoted = "'" + str(path).replace("'", "'\\''") + "'"
    return f"exec cat >> {quoted}"


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
        self, session: str, begin: str, end: str, persisted: tuple[str, int] | None
    ) -> PaneLog:
        log = self.logs.get(session)
        if log is not None:
            return log
        path = log_path(self.logs_dir, session)
        if persisted is not None and persisted[0] == str(path):
            offset = persisted[1]
        else:
            # Never read before: only what the pane prints from now on is ours to parse.
            offset = file_size(path)
        log = self.logs[session] = PaneLog(session, path, begin, end, offset=offset)
        return log

    def read_all(self, now: float) -> dict[str, list[Result]]:
        return {name: log.read(now) for name, log in self.logs.items()}

    def offsets(self) -> dict[str, tuple[str, int]]:
        return {name: (str(log.path), log.safe_offset) for name, log in self.logs.items()}
