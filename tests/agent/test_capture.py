"""Pane log reading: blocks split across reads, and the safe offset a restart resumes from."""

from __future__ import annotations

import json
from pathlib import Path

from agent.events.capture import PaneLog
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END, Emitted, Invalid


def block(n: int) -> bytes:
    body = json.dumps(
        {"event_type": "tool_call", "summary": f"call {n}", "idempotency_key": f"k{n}"}
    )
    return f"{DEFAULT_BEGIN}\r\n{body}\r\n{DEFAULT_END}\r\n".encode()


def keys(results: list) -> list[str]:
    return [r.idempotency_key for r in results if isinstance(r, Emitted)]


def test_split_block_and_safe_offset(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    data = b"\x1b[32mhello\x1b[0m\r\n" + block(1) + block(2)
    cut = len(b"\x1b[32mhello\x1b[0m\r\n" + block(1)) + 10  # inside block 2's BEGIN line
    path.write_bytes(data[:cut])
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END)
    assert keys(log.read(now=0.0)) == ["k1"]
    block2_start = len(b"\x1b[32mhello\x1b[0m\r\n" + block(1))
    assert log.safe_offset == block2_start

    mid = block2_start + len(block(2)) // 2
    path.write_bytes(data[:mid])
    assert log.read(now=1.0) == []
    assert log.safe_offset == block2_start  # an open block: a restart must re-read it whole

    # A crash now: a new reader resumes from the safe offset and finds block 2 exactly once.
    path.write_bytes(data)
    fresh = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, offset=log.safe_offset)
    assert keys(fresh.read(now=2.0)) == ["k2"]
    assert fresh.safe_offset == len(data)
    assert (
        log.read(now=2.0)
        and keys(PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, offset=len(data)).read(now=3.0))
        == []
    )


def test_unclosed_block_times_out_once(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(f'{DEFAULT_BEGIN}\n{{"event_type": "x"\n'.encode())
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END)
    assert log.read(now=0.0) == []
    [bad] = log.read(now=120.0)
    assert isinstance(bad, Invalid) and bad.reason == "unclosed_timeout"
    assert log.read(now=240.0) == []
    assert log.safe_offset == path.stat().st_size


def test_truncated_log_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(block(1) + block(2))
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END)
    assert keys(log.read(now=0.0)) == ["k1", "k2"]
    path.write_bytes(block(3))
    assert keys(log.read(now=1.0)) == ["k3"]
