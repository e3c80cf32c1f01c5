"""The process tree under a pane, read from /proc, to see which runtime really runs there."""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

PROC = Path("/proc")


def zombie_wait_status(pid: int, proc: Path = PROC) -> int | None:
    """The wait status of ``pid`` if it is a zombie nobody reaped yet, else None.

    tmux 3.3a sometimes marks a pane dead (its pty closed) and never reaps the process, so
    `pane_dead_status`/`pane_dead_signal` stay empty until the pane is respawned (seen about
    one kill in five); the kernel still holds the status for the zombie, in stat field 52."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if len(fields) < 50 or fields[0] != "Z":
        return None
    return int(fields[49])


class ProcessTable:
    """One snapshot of parent→children and cmdlines, taken once per tick."""

    def __init__(self, children: dict[int, list[int]], cmdlines: dict[int, str]) -> None:
        self._children = children
        self._cmdlines = cmdlines

    @classmethod
    def snapshot(cls, proc: Path = PROC) -> ProcessTable:
        children: dict[int, list[int]] = defaultdict(list)
        cmdlines: dict[int, str] = {}
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = (entry / "stat").read_text()
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # exited while we looked
            # The command name in stat may hold spaces and parens: the ppid follows the last ')'.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children[ppid].append(pid)
            cmdlines[pid] = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        return cls(dict(children), cmdlines)

    def tree_cmdlines(self, root: int, limit: int = 64) -> list[str]:
        """Cmdlines of ``root`` and its descendants, breadth-first, root first."""
        out: list[str] = []
        queue = deque([root])
        while queue and len(out) < limit:
            pid = queue.popleft()
            if pid in self._cmdlines:
                out.append(self._cmdlines[pid])
            queue.extend(sorted(self._children.get(pid, ())))
        return out
