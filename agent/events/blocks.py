"""Emission blocks on rendered rows: what lies between a BEGIN and an END sentinel row.

A TUI draws around what the model printed: a bullet before the first row of a message
(Claude Code's `⏺ `, Codex's `• `), an indent before the others, sometimes a border. A row is
a sentinel when the sentinel is the only text on it but for such decoration (at most two
non-alphanumeric, non-quote characters each side); the column the sentinel starts at is the
block's gutter, cut from its body rows when the gutter holds only blanks or decoration. Rows
the terminal wrapped are joined without a separator (the line was one line); rows a TUI
word-wrapped are not marked, and `protocol.emission.parse_lines` rejoins them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agent.events.pane_screen import Row

_QUOTES = "\"'`"


@dataclass
class Block:
    start: int  # index of the BEGIN row
    stop: int  # index of the END row; len(rows) while the block is still open
    lines: list[str]  # body lines, decoration cut, wrapped rows joined
    closed: bool

    @property
    def flat(self) -> str:
        """What identifies the block across redraws: its text without any whitespace, so a
        rewrap at another width or a moved indent is the same block."""
        return "".join("".join(line.split()) for line in self.lines)

    @property
    def key(self) -> bytes:
        return hashlib.blake2b(self.flat.encode(), digest_size=16).digest()

    @property
    def size(self) -> int:
        return sum(len(line.encode()) + 1 for line in self.lines)


def _decoration(text: str) -> bool:
    core = text.strip()
    return len(core) <= 2 and not any(c.isalnum() or c in _QUOTES for c in core)


def sentinel_at(text: str, sentinel: str) -> int | None:
    """The column `sentinel` starts at when it is alone on the row, else None."""
    i = text.find(sentinel)
    if i < 0:
        return None
    if not _decoration(text[:i]) or not _decoration(text[i + len(sentinel) :]):
        return None
    return i


def _body(rows: list[Row], gutter: int, border: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for text, wrapped in rows:
        pending += text  # a wrapped row goes on at column 0 of the next
        if wrapped:
            continue
        line = pending
        pending = ""
        head = line[:gutter]
        if head and _decoration(head) and len(head.strip()) <= 1:
            line = line[gutter:]
        line = line.strip()
        if border and line.endswith(border):
            line = line[: -len(border)].rstrip()
        lines.append(line)
    if pending:
        lines.append(pending.strip())
    return lines


def find_blocks(rows: list[Row], begin: str, end: str) -> list[Block]:
    """Every block on `rows` in order, the last one possibly still open (`closed` false).
    An END with no BEGIN before it is not reported: on a screen it is the tail of a block
    that scrolled away before this reader started, or a fragment of a redraw."""
    blocks: list[Block] = []
    start: int | None = None
    gutter = 0
    border = ""
    for i, (text, _) in enumerate(rows):
        if begin in text and (col := sentinel_at(text, begin)) is not None:
            if start is not None:
                blocks.append(_make(rows, start, i, gutter, border, closed=False))
            start, gutter = i, col
            border = text[col + len(begin) :].strip()
        elif start is not None and end in text and sentinel_at(text, end) is not None:
            blocks.append(_make(rows, start, i, gutter, border, closed=True))
            start = None
    if start is not None:
        blocks.append(_make(rows, start, len(rows), gutter, border, closed=False))
    return blocks


def _make(rows: list[Row], start: int, stop: int, gutter: int, border: str, closed: bool) -> Block:
    return Block(start, stop, _body(rows[start + 1 : stop], gutter, border), closed)
