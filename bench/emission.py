"""What reading the emission contract off an emulated screen costs: CPU seconds per MiB of
pane output, per runtime, against the line splitter it replaced and against asking tmux.

    .venv/bin/python -m bench.emission [--mib 4] [--read 65536]

Input: the recorded `pipe-pane` streams of the real CLIs (tests/fixtures/emission/, recorded by
scripts/record_emission.py), repeated to `--mib` MiB and read through `agent.events.capture`
in `--read`-byte reads (what one pass finds in a log). Every result is counted (the copies
repeat the same three blocks, so a correct reader finds 3), so a broken reader shows as a
wrong count rather than a fast one. For comparison: the old line splitter
(`protocol.emission.EmissionParser`, which loses the blocks) over the same bytes, and what one
`tmux capture-pane -p -J -S -200` costs (the alternative: asking tmux for its rendered
scrollback each pass, whatever the pane printed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent.events.capture import PaneLog  # noqa: E402
from protocol.emission import DEFAULT_BEGIN, DEFAULT_END, EmissionParser  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "emission"
MIB = 1024 * 1024


def screen_reader(data: bytes, read: int, work: Path) -> tuple[float, int]:
    path = work / "pane.log"
    path.write_bytes(b"")
    log = PaneLog("s", path, DEFAULT_BEGIN, DEFAULT_END, size=(120, 40))
    found = 0
    cpu = 0.0
    with path.open("ab") as f:
        for start in range(0, len(data), read):
            f.write(data[start : start + read])
            f.flush()
            t = time.process_time()
            found += len(log.read(now=0.0))
            cpu += time.process_time() - t
    return cpu, found


def line_parser(data: bytes, read: int) -> tuple[float, int]:
    parser = EmissionParser()
    t = time.process_time()
    found = 0
    for start in range(0, len(data), read):
        found += len(parser.feed(data[start : start + read].decode(errors="replace"), 0.0))
    return time.process_time() - t, found


def capture_pane_cost(n: int = 50) -> float | None:
    """Wall seconds of one `capture-pane` of a 120x40 pane with 200 lines of history."""
    if shutil.which("tmux") is None:
        return None
    base = ["tmux", "-L", f"af-bench-{uuid.uuid4().hex[:6]}", "-f", "/dev/null"]
    script = "for i in $(seq 240); do echo line $i; done; exec sleep 60"
    subprocess.run([*base, "new-session", "-d", "-x", "120", "-y", "40", script], check=True)
    try:
        t = time.perf_counter()
        for _ in range(n):
            subprocess.run(
                [*base, "capture-pane", "-p", "-J", "-S", "-200"], check=True, capture_output=True
            )
        return (time.perf_counter() - t) / n
    finally:
        subprocess.run([*base, "kill-server"], check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=float, default=4.0, help="MiB of output per runtime")
    p.add_argument("--read", type=int, default=64 * 1024, help="bytes per read")
    args = p.parse_args()
    print(f"{'runtime':8} {'MiB':>5} {'screen s/MiB':>13} {'blocks':>7} {'lines s/MiB':>12}")
    with tempfile.TemporaryDirectory(prefix="af-bench-emit-") as work:
        for runtime in ("claude", "codex", "pi"):
            one = (FIXTURES / f"{runtime}-session.bytes").read_bytes()
            # Each copy from a reset terminal (RIS), as the recording began: replayed onto the
            # screen the previous copy left, a TUI's relative moves would land elsewhere.
            data = (b"\x1bc" + one) * max(1, int(args.mib * MIB / len(one)))
            mib = len(data) / MIB
            cpu, found = screen_reader(data, args.read, Path(work))
            old_cpu, _ = line_parser(data, args.read)
            print(f"{runtime:8} {mib:5.1f} {cpu / mib:13.3f} {found:7d} {old_cpu / mib:12.3f}")
    cost = capture_pane_cost()
    if cost is not None:
        print(f"capture-pane -J -S -200 (the alternative): {cost * 1000:.1f} ms per pane per pass")


if __name__ == "__main__":
    main()
