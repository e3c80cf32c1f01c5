"""A terminal emulation of one pane, fed the raw bytes `tmux pipe-pane` logged.

TUIs do not print lines: Claude Code (Ink) rewrites rows with `\\r ESC[1B`, Codex (ratatui)
paints cells at absolute `ESC[row;colH`, pi re-renders its streaming message. What a human
(and `tmux capture-pane`) sees is the screen those bytes leave behind, so that is what the
emission contract is read from (docs/protocol.md). `pyte` does the emulation; this screen
adds what reading needs:

- rows leaving the top of the screen (scrolled into the terminal's history) are handed over,
  so a block taller than the pane, or scrolled away between two reads, is still read whole;
- a row the terminal itself wrapped (text ran past the last column) is marked, so the reader
  joins it to the next row without a separator;
- the points where the screen is whole: the end of a synchronized update (`ESC[?2026l`,
  Codex and pi bracket each frame with it) and the moment before a clear. ``on_frame`` is
  called there, so a block shown and then cleared between two reads is still seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyte
from pyte.screens import Margins

# Private modes are stored shifted by 5 in pyte (pyte.modes).
_SYNC_MODE = 2026 << 5

Row = tuple[str, bool]  # (text with trailing blanks cut, the terminal wrapped it onto the next)


class _Stream(pyte.ByteStream):
    # pyte 0.8.2 has no SU/SD; ratatui scrolls its history region with them.
    csi = {**pyte.ByteStream.csi, "S": "scroll_up", "T": "scroll_down"}


class PaneScreen(pyte.Screen):
    def __init__(self, columns: int, lines: int, on_frame: Callable[[], None]) -> None:
        super().__init__(columns, lines)
        self.on_frame = on_frame
        self.scrolled: list[Row] = []  # rows that left the top since the last take_scrolled()
        self.syncing = False  # inside a synchronized update: the screen is half drawn
        self._drawing = False
        self._rows: list[Row] = []

    def row(self, y: int) -> Row:
        line = self.buffer[y]
        cells = [" "] * self.columns
        for x, char in line.items():  # only the cells written: most rows are short
            if x < self.columns:
                cells[x] = char.data
        text = "".join(cells)
        if getattr(line, "af_wrapped", False):
            return text, True  # all of it: a blank in the last column is part of the line
        return text.rstrip(), False

    def rows(self) -> list[Row]:
        """Every row; only those pyte marked dirty since the last call are rendered again."""
        if len(self._rows) != self.lines:
            self._rows = [("", False)] * self.lines
            self.dirty.update(range(self.lines))
        for y in self.dirty:
            if y < self.lines:
                self._rows[y] = self.row(y)
        self.dirty.clear()
        return list(self._rows)

    def take_scrolled(self) -> list[Row]:
        rows, self.scrolled = self.scrolled, []
        return rows

    # --- what pyte does, plus what reading needs -------------------------------------------

    def draw(self, data: str) -> None:
        self._drawing = True
        try:
            super().draw(data)
        finally:
            self._drawing = False

    def linefeed(self) -> None:
        if self._drawing:  # called from draw(): the text ran past the last column
            # The flag rides on pyte's line object so that it moves with the line when the
            # screen scrolls; pyte's types declare no such attribute.
            self.buffer[self.cursor.y].af_wrapped = True  # type: ignore[attr-defined]
        super().linefeed()

    def index(self) -> None:
        top, bottom = self.margins or Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0:  # as a terminal, only then into history
            self.scrolled.append(self.row(0))
        super().index()

    def scroll_up(self, count: int | None = None, *args: Any, **kwargs: Any) -> None:
        top, bottom = self.margins or Margins(0, self.lines - 1)
        for _ in range(min(max(count or 1, 1), bottom - top + 1)):
            if top == 0:
                self.scrolled.append(self.row(0))
            for y in range(top, bottom):
                self.buffer[y] = self.buffer[y + 1]
            self.buffer.pop(bottom, None)
        self.dirty.update(range(self.lines))

    def scroll_down(self, count: int | None = None, *args: Any, **kwargs: Any) -> None:
        top, bottom = self.margins or Margins(0, self.lines - 1)
        for _ in range(min(max(count or 1, 1), bottom - top + 1)):
            for y in range(bottom, top, -1):
                self.buffer[y] = self.buffer[y - 1]
            self.buffer.pop(top, None)
        self.dirty.update(range(self.lines))

    def erase_in_line(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if how == 2 or (how == 0 and self.cursor.x == 0):  # a rewritten row is not wrapped
            # (our attribute on pyte's line: see linefeed)
            self.buffer[self.cursor.y].af_wrapped = False  # type: ignore[attr-defined]
        super().erase_in_line(how, *args, **kwargs)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if not self.syncing:
            self.on_frame()  # read what is about to be cleared
        super().erase_in_display(how, *args, **kwargs)

    def reset(self) -> None:  # RIS (ESC c)
        super().reset()
        self.syncing = False

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        super().set_mode(*modes, **kwargs)
        if kwargs.get("private") and 2026 in modes:
            self.syncing = True

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        super().reset_mode(*modes, **kwargs)
        if kwargs.get("private") and 2026 in modes:
            self.syncing = False
            self.mode.discard(_SYNC_MODE)
            self.on_frame()


def make_stream(screen: PaneScreen) -> pyte.ByteStream:
    return _Stream(screen)
