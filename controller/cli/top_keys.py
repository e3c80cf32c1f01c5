"""`fleet top`'s keys: move the selection, and open `watch`, `send`, `cancel` or `explain` on
the selected session. An action pauses the live view, runs the same `fleet` command in the
terminal (cooked mode, its own Ctrl-C), and comes back to the view when it ends.

Keys are read in a worker thread (a ``select`` with a timeout, so it ends when asked); what
they change is done in the event loop's thread through ``anyio.from_thread``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import termios
import threading
import tty
from collections.abc import Callable

import anyio.from_thread

KEYS_HELP = "j/k move  w watch  s send  c cancel  e explain  q quit"
_UP, _DOWN = ("k", "\x1b[A"), ("j", "\x1b[B")


def fleet_argv() -> list[str]:
    """The `fleet` command this process runs as (the same install, the same Python)."""
    return [sys.executable, "-c", "from controller.cli.app import main; main()"]


def _ignore(signum: int, frame: object) -> None:
    pass


class KeyLoop:
    def __init__(
        self,
        target: Callable[[], str | None],
        move: Callable[[int], None],
        pause: Callable[[bool], None],
        quit_: Callable[[], None],
        env: dict[str, str],
    ) -> None:
        self.target, self.move, self.pause, self.quit = target, move, pause, quit_
        self.env = env
        self.stop = threading.Event()

    def run(self) -> None:
        """The thread's body: read keys until ``stop`` is set or `q`."""
        fd = sys.stdin.fileno()
        while not self.stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            key = os.read(fd, 16).decode(errors="ignore")
            if key in ("q", "Q", "\x03", ""):
                anyio.from_thread.run_sync(self.quit)
                return
            if key in _UP or key in _DOWN:
                anyio.from_thread.run_sync(self.move, -1 if key in _UP else 1)
            elif key in ("w", "s", "c", "e"):
                target = anyio.from_thread.run_sync(self.target)
                if target:
                    self._action(fd, key, target)

    def _action(self, fd: int, key: str, target: str) -> None:
        anyio.from_thread.run_sync(self.pause, True)
        saved = termios.tcgetattr(fd)
        cooked = list(saved)
        cooked[3] |= termios.ECHO | termios.ICANON
        termios.tcsetattr(fd, termios.TCSADRAIN, cooked)
        # Ctrl-C belongs to the command now (watch ends on it), not to the view: a Python
        # handler that does nothing (unlike SIG_IGN, exec resets it, so the command gets the
        # default one; signal.signal works in the main thread only, hence from_thread).
        previous = anyio.from_thread.run_sync(signal.signal, signal.SIGINT, _ignore)
        try:
            argv = self._argv(key, target)
            if argv:
                subprocess.run(argv, env={**os.environ, **self.env}, check=False)
            if key != "w":
                input("\n[Enter] back to fleet top ")
        except EOFError:
            pass
        finally:
            anyio.from_thread.run_sync(signal.signal, signal.SIGINT, previous)
            tty.setcbreak(fd)
            anyio.from_thread.run_sync(self.pause, False)

    def _argv(self, key: str, target: str) -> list[str] | None:
        verb = {"w": "watch", "c": "cancel", "e": "explain", "s": "send"}[key]
        print(f"\nfleet {verb} {target}")
        if key == "s":
            text = input("text (empty: nothing sent): ")
            return [*fleet_argv(), "send", target, text] if text.strip() else None
        return [*fleet_argv(), verb, target]
