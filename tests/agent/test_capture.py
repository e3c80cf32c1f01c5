"""Pane log reading through the emulated screen: recorded streams of the real CLIs, redraws,
wraps, scrolling, and the offset a restart resumes from.

The `tests/fixtures/emission/<runtime>-session.bytes` streams are what `tmux pipe-pane` logged
while Claude Code 2.1.197, Codex 0.171.0 and pi 0.73.1 answered three prompts, each with an
emission block (scripts/record_emission.py): a short one, one wider than the pane (the TUI
wraps it) and a broken one. Split on newlines, as before, Claude's and Codex's blocks were lost
without any error and pi's read as `invalid_json`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from agent.events.capture import CaptureSet, PaneLog
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END, Emitted, Invalid, Result

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "emission"
RUNTIMES = ["claude", "codex", "pi"]
LONG_SUMMARY = " ".join(["{m}", *(f"w{i:02d}" for i in range(60)), "end"])


def block(n: int) -> bytes:
    body = json.dumps(
        {"event_type": "tool_call", "summary": f"call {n}", "idempotency_key": f"k{n}"}
    )
    return f"{DEFAULT_BEGIN}\r\n{body}\r\n{DEFAULT_END}\r\n".encode()


def keys(results: list[Result]) -> list[str | None]:
    return [r.idempotency_key for r in results if isinstance(r, Emitted)]


def recorded(runtime: str) -> tuple[bytes, dict[str, str], tuple[int, int]]:
    meta = json.loads((FIXTURES / f"{runtime}-session.json").read_text())
    data = (FIXTURES / f"{runtime}-session.bytes").read_bytes()
    return data, meta["markers"], (meta["width"], meta["height"])


def read_growing(
    path: Path,
    data: bytes,
    cuts: list[int],
    log: PaneLog | None = None,
    size: tuple[int, int] = (120, 40),
) -> tuple[list[Result], PaneLog]:
    """Write `data` to `path` in steps ending at `cuts`, reading after each; all results."""
    log = log or PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, size=size)
    out: list[Result] = []
    for cut in [*cuts, len(data)]:
        path.write_bytes(data[:cut])
        out += log.read(now=0.0)
    return out, log


def assert_session(results: list[Result], markers: dict[str, str]) -> None:
    """Exactly the three blocks: two events and one validation error, each once."""
    emitted = [r for r in results if isinstance(r, Emitted)]
    invalid = [r for r in results if isinstance(r, Invalid)]
    assert [e.summary for e in emitted] == [
        markers["short"],
        LONG_SUMMARY.format(m=markers["long"]),
    ], results
    assert [e.event_type for e in emitted] == ["tool_call", "run.completed"]
    assert emitted[0].confidence == 0.9
    assert len(invalid) == 1, invalid
    assert invalid[0].reason == "invalid_json"
    assert markers["broken"] in invalid[0].excerpt


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("step", [0, 4096, 211, 53])
def test_recorded_cli_blocks_read_once_in_any_chunking(
    runtime: str, step: int, tmp_path: Path
) -> None:
    data, markers, size = recorded(runtime)
    cuts = list(range(step, len(data), step)) if step else []
    results, _ = read_growing(tmp_path / "s.log", data, cuts, size=size)
    assert_session(results, markers)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_restart_from_the_safe_offset_neither_repeats_nor_loses(
    runtime: str, tmp_path: Path
) -> None:
    """A crash after any committed read: the new reader starts at the persisted offset."""
    data, markers, size = recorded(runtime)
    path = tmp_path / "s.log"
    rng = random.Random(runtime)
    for cut in sorted(rng.sample(range(1, len(data)), 12)):
        path.write_bytes(data[:cut])
        first = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, size=size)
        before = first.read(now=0.0)
        path.write_bytes(data)
        again = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, offset=first.safe_offset, size=size)
        after = again.read(now=0.0)
        assert again.safe_offset == len(data)
        assert_session(before + after, markers)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rewind_rereads_what_was_not_committed(runtime: str, tmp_path: Path) -> None:
    data, markers, size = recorded(runtime)
    path = tmp_path / "s.log"
    path.write_bytes(data[: len(data) // 2])
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, size=size)
    committed = log.read(now=0.0)
    offset = log.safe_offset
    path.write_bytes(data)
    lost = log.read(now=0.0)
    assert lost, "the second half holds blocks"
    log.rewind(offset)  # the outbox was full: nothing of `lost` was stored
    assert log.read(now=0.0) == lost
    assert_session(committed + lost, markers)


def test_a_new_log_reports_only_what_comes_after_it_was_found(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(block(1))
    captures = CaptureSet(tmp_path)
    log = captures.track("s", DEFAULT_BEGIN, DEFAULT_END, None, (80, 24))
    assert log.size == (80, 24) and log.read(now=0.0) == []
    path.write_bytes(block(1) + b"\x1b[H\x1b[2J" + block(1) + block(2))  # a redraw, then k2
    assert keys(log.read(now=1.0)) == ["k2"]


def test_terminal_wrapped_line_is_joined_without_a_gap(tmp_path: Path) -> None:
    """A plain program printing a line wider than the pane: the terminal wraps it, possibly
    inside a word or right after a blank; the line is rebuilt exactly."""
    summary = "x" * 117 + " y" + " z" * 100 + "tail"
    body = json.dumps({"event_type": "note", "summary": summary})
    data = f"{DEFAULT_BEGIN}\r\n{body}\r\n{DEFAULT_END}\r\n".encode()
    [result] = read_growing(tmp_path / "s.log", data, [], size=(60, 10))[0]
    assert isinstance(result, Emitted) and result.summary == summary


def test_redrawn_block_with_decoration_is_emitted_once(tmp_path: Path) -> None:
    """Painted at absolute positions five times, with a bullet, indent and a border."""
    body = '{"event_type": "tool_call", "summary": "painted", "tags": "t"}'
    frame = "".join(
        f"\x1b[{row};1H\x1b[2K{text}"
        for row, text in [
            (3, f"\x1b[1m• \x1b[0m{DEFAULT_BEGIN}  │"),
            (4, f"  \x1b[36m{body}\x1b[0m │"),
            (5, f"  {DEFAULT_END} │"),
        ]
    )
    data = ("\x1b[?2026h" + frame + "\x1b[?2026l").encode() * 5
    results, _ = read_growing(tmp_path / "s.log", data, [40, 300, 301])
    assert [(type(r).__name__, getattr(r, "summary", "")) for r in results] == [
        ("Emitted", "painted")
    ]


def test_scrolled_and_tall_blocks_are_read_once(tmp_path: Path) -> None:
    """A pretty-printed block taller than the pane, then output that scrolls it away."""
    body = json.dumps(
        {"event_type": "tall", "summary": "tall one", "tags": [str(i) for i in range(50)]}, indent=2
    )
    data = (f"{DEFAULT_BEGIN}\n{body}\n{DEFAULT_END}\n".replace("\n", "\r\n")).encode()
    data += b"".join(f"line {i}\r\n".encode() for i in range(100)) + block(7)
    results, _ = read_growing(
        tmp_path / "s.log", data, list(range(100, len(data), 333)), size=(80, 12)
    )
    assert [r.summary for r in results if isinstance(r, Emitted)] == ["tall one", "call 7"]
    assert not [r for r in results if isinstance(r, Invalid)]


def test_partial_frame_then_whole_is_one_block_but_a_real_nest_is_an_error(
    tmp_path: Path,
) -> None:
    good = json.dumps({"event_type": "a", "summary": "whole"})
    stutter = f"{DEFAULT_BEGIN}\r\n{good[:15]}\r\n{DEFAULT_BEGIN}\r\n{good}\r\n{DEFAULT_END}\r\n"
    nested = f'{DEFAULT_BEGIN}\r\n{{"event_type": "lost"\r\n' + block(3).decode()
    results, _ = read_growing(tmp_path / "s.log", (stutter + nested).encode(), [])
    assert [getattr(r, "summary", None) or r.reason for r in results] == [
        "whole",
        "nested_begin",
        "call 3",
    ]


def test_unclosed_block_times_out_once(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(f'{DEFAULT_BEGIN}\n{{"event_type": "x"\n'.encode())
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END)
    assert log.read(now=0.0) == []
    [bad] = log.read(now=120.0)
    assert isinstance(bad, Invalid) and bad.reason == "unclosed_timeout"
    assert '"event_type": "x"' in bad.excerpt
    assert log.read(now=240.0) == []
    assert log.safe_offset == path.stat().st_size
    # The screen is cleared, another block is left open: it times out too, once.
    with path.open("ab") as f:
        f.write(f'\x1b[H\x1b[2J{DEFAULT_BEGIN}\n{{"event_type": "y"\n'.encode())
    assert log.read(now=250.0) == []
    [again] = log.read(now=311.0)
    assert again.reason == "unclosed_timeout" and '"y"' in again.excerpt
    assert log.read(now=400.0) == []


def test_restart_inside_an_open_block_times_it_out_from_the_first_live_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(f'{DEFAULT_BEGIN}\n{{"event_type": "x"\n'.encode())
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, offset=path.stat().st_size)
    assert log.read(now=1000.0) == []  # the replay's clock is not the wall clock
    assert log.read(now=1050.0) == []
    [bad] = log.read(now=1061.0)
    assert isinstance(bad, Invalid) and bad.reason == "unclosed_timeout"


def test_truncated_log_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    path.write_bytes(block(1) + block(2))
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END)
    assert keys(log.read(now=0.0)) == ["k1", "k2"]
    path.write_bytes(block(3))
    assert keys(log.read(now=1.0)) == ["k3"]
