"""The host agent's end of the hook spool: tail `<state>/hooks/*.jsonl` into `HookSignal`s.

Each session's hooks append JSON lines to `<session>.jsonl` (agent/hooks/send.py, the pi
extension). `HookInbox.drain()` reads what is new since the last call, in order, and numbers
each line per session (`seq`). A half-written last line waits for the next drain. A bad line
is counted and logged once per drain, never raised. Files present when the inbox opens are
read from their end: after an agent restart, old hook lines describe a past the screen has
already replaced. A fully read spool over `ROTATE_BYTES` is renamed away and deleted, so it
does not grow forever (a hook writing in that instant can lose its line; the screen covers).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.ids import IdError, validate_session

log = logging.getLogger(__name__)

ROTATE_BYTES = 1 << 20
MAX_READ = 4 << 20  # per file per drain


@dataclass(frozen=True, slots=True)
class HookSignal:
    session: str
    runtime: str
    event: str  # hook_event_name (claude), type (codex notify, pi)
    at: float  # when the runtime sent it
    seq: int
    payload: dict[str, Any]


@dataclass
class HookInbox:
    directory: Path
    offsets: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    bad_lines: int = 0

    def __post_init__(self) -> None:
        for path in self._files():
            self.offsets[path.stem] = path.stat().st_size

    def _files(self) -> list[Path]:
        try:
            return sorted(self.directory.glob("*.jsonl"))
        except OSError:
            return []

    def drain(self) -> list[HookSignal]:
        out: list[HookSignal] = []
        for path in self._files():
            out += self._drain_file(path)
        return out

    def _drain_file(self, path: Path) -> list[HookSignal]:
        name = path.stem
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = self.offsets.get(name, 0)
                if size < start:  # truncated or replaced by someone: start over
                    start = 0
                f.seek(start)
                data = f.read(MAX_READ)
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.offsets[name] = start + end
        signals = self._parse(name, data[:end])
        if start + end == size and size > ROTATE_BYTES:
            self._rotate(path, name)
        return signals

    def _rotate(self, path: Path, name: str) -> None:
        draining = path.with_suffix(".draining")
        try:
            os.rename(path, draining)
            draining.unlink()
        except OSError:
            return
        self.offsets[name] = 0

    def _parse(self, name: str, data: bytes) -> list[HookSignal]:
        out: list[HookSignal] = []
        bad = 0
        for raw in data.splitlines():
            if not raw.strip():
                continue
            signal = self._signal(name, raw)
            if signal is None:
                bad += 1
            else:
                out.append(signal)
        if bad:
            self.bad_lines += bad
            log.warning("hook spool %s: %d unreadable line(s) skipped", name, bad)
        return out

    def _signal(self, name: str, raw: bytes) -> HookSignal | None:
        try:
            line = json.loads(raw)
            payload = line.get("payload")
            session = validate_session(name)  # the file names the session, not the line
            at = float(line["at"])
        except (ValueError, TypeError, KeyError, AttributeError, IdError):
            return None
        if not isinstance(payload, dict):
            payload = {"value": payload}
        runtime = str(line.get("runtime") or "")
        event = payload.get("hook_event_name") or payload.get("type") or ""
        seq = self.seqs.get(session, 0) + 1
        self.seqs[session] = seq
        return HookSignal(session, runtime, str(event), at, seq, payload)
