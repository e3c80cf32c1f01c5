"""The stub agent's terminal: output that a Ctrl-C can never cut in half, a status line
that is erased when done, echo off while working. Stdlib only, like the stub."""

from __future__ import annotations

import contextlib
import signal
import termios
from collections.abc import Iterator
from typing import TextIO


class Terminal:
    """Lines out, keeping one live status line at the bottom when output is a TTY.

    Escape sequences (status line, erasing, title) are only written to a TTY, so piped
    output stays plain text.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.fancy = isatty(out)
        self._status: str | None = None

    def lines(self, *lines: str) -> None:
        with sigint_held():
            if self._status is not None:
                self.out.write("\r\x1b[K")
            self.out.write("".join(line + "\n" for line in lines))
            if self._status is not None:
                self.out.write(self._status)
            self.out.flush()

    def status(self, text: str | None) -> None:
        if self.fancy and (text is not None or self._status is not None):
            self._raw("\r\x1b[K" + (text or ""))
            self._status = text

    def ask(self, prompt: str) -> None:
        self._raw(prompt)

    def newline(self) -> None:
        self._raw("\n")

    def erase_line(self) -> None:
        if self.fancy:
            self._raw("\r\x1b[K")

    def erase_answered_question(self) -> None:
        # The echoed answer left the cursor one row below the question: go up, erase down.
        # A question left on screen would read as "blocked" after it was answered.
        if self.fancy:
            self._raw("\x1b[1F\x1b[J")

    def title(self, text: str) -> None:
        if self.fancy:
            self._raw(f"\x1b]2;{text}\x1b\\")

    def _raw(self, text: str) -> None:
        with sigint_held():
            self.out.write(text)
            self.out.flush()


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    # A Ctrl-C in the middle of a write would leave half an emission block on screen;
    # the signal stays pending until the write is complete, then raises as usual.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def no_echo(fd: int | None) -> Iterator[None]:
    # While a run works, keys typed ahead (the next prompt) must not echo into the live
    # status line: the stray copy would stay on screen and read as "busy" forever.
    if fd is None:
        yield
        return
    old = termios.tcgetattr(fd)
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, old)


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    # Whoever started us may have ignored SIGINT; Ctrl-C must cancel runs regardless.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
