"""Turn raw terminal output (a `pipe-pane` log, a watch stream) into the text a human saw.

Each line is replayed on a one-line model of the screen: escape sequences are dropped,
`\\r` and backspace move the cursor and later text overwrites earlier text, and
erase-in-line clears what it would clear on a real terminal. So a progress line redrawn
with `\\r` keeps only its final content, and `\\r\\n` line ends cost nothing.

Cursor moves between lines (a TUI repainting rows above) cannot be replayed without a
full screen emulator; they are dropped like any other escape sequence.
"""

from __future__ import annotations

import re

# One token per match; a string sequence (OSC, DCS, ...) that is never terminated runs to
# the end of the line, because a line is the unit we replay and must not leak into the next.
_TOKEN = re.compile(
    r"(?:\x1b\[|\x9b)(?P<params>[0-?]*)[ -/]*(?P<final>[@-~])"  # CSI
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"  # OSC DCS SOS PM APC
    r"|\x1b[ -/]*[0-~]"  # charset selects (ESC ( B), keypad modes, save/restore cursor
    r"|[\x00-\x1f\x7f-\x9f]"  # any other control character, a lone ESC included
)
_SPECIAL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline are ordinary text


def _csi_count(params: str, default: int) -> int:
    head = params.split(";", 1)[0]
    return int(head) if head.isdigit() else default


def strip_line(line: str) -> str:
    """Replay one line (no `\\n` inside) and return what the screen shows."""
    if line.endswith("\r"):  # CRLF from the pty: a carriage return at the end changes nothing
        line = line[:-1]
    if not _SPECIAL.search(line):
        return line
    cells: list[str] = []
    col = 0
    pos = 0
    for match in _TOKEN.finditer(line):
        if match.start() > pos:
            col = _write(cells, col, line[pos : match.start()])
        pos = match.end()
        token = match.group()
        if token == "\r":
            col = 0
        elif token == "\b":
            col = max(0, col - 1)
        elif token == "\t":
            col = _write(cells, col, "\t")
        elif (final := match.group("final")) is not None:
            col = _csi(cells, col, match.group("params"), final)
    if pos < len(line):
        _write(cells, col, line[pos:])
    return "".join(cells)


def _write(cells: list[str], col: int, text: str) -> int:
    if col > len(cells):  # cursor was moved past the end: the gap shows as blanks
        cells.extend(" " * (col - len(cells)))
    cells[col : col + len(text)] = text
    return col + len(text)


def _csi(cells: list[str], col: int, params: str, final: str) -> int:
    if final in "KJ":  # erase in line / in display (the display part we cannot see)
        mode = _csi_count(params, 0)
        if mode == 0:
            del cells[col:]
        elif mode == 1:
            cells[: col + 1] = " " * min(col + 1, len(cells))
        else:
            cells.clear()
    elif final == "G":  # cursor to column n (1-based)
        return max(0, _csi_count(params, 1) - 1)
    elif final == "C":
        return col + max(1, _csi_count(params, 1))
    elif final == "D":
        return max(0, col - max(1, _csi_count(params, 1)))
    return col  # colours, cursor up/down, modes: nothing to replay on one line


def strip_terminal(text: str) -> str:
    """Strip escapes and replay `\\r`/backspace redraws, line by line."""
    if not _SPECIAL.search(text):
        return text
    return "\n".join(strip_line(line) for line in text.split("\n"))
