"""Emission results from a pane's byte stream, read off its emulated screen.

Each read feeds the bytes to a `PaneScreen`, then looks for blocks on the rows the terminal
shows and the rows that scrolled off since they were last needed. It looks at the end of the
read and wherever the screen is whole inside it (the end of a synchronized frame, before a
clear), outside a frame only, so a half-painted frame is never read.

A block is emitted once per session however often it is drawn: its whitespace-free text is
remembered (the last `SEEN_KEYS` blocks), so a redraw, a rewrap or a scroll does not repeat
it. A block that cannot be read is one `Invalid` (remembered the same way); one still open
after `max_block_seconds` is one `unclosed_timeout`, one larger than `max_block_bytes` one
`oversize`. A BEGIN drawn again before its END (a partial frame, then the whole one) is the
same block; a BEGIN whose block differs from the one that follows is one `nested_begin`.
"""

from __future__ import annotations

from collections import OrderedDict

from agent.events.blocks import Block, find_blocks
from agent.events.pane_screen import PaneScreen, Row, make_stream
from protocol.emission import Invalid, Result, excerpt, parse_lines

SEEN_KEYS = 4096


class PaneReader:
    def __init__(
        self,
        begin: str,
        end: str,
        columns: int = 120,
        lines: int = 40,
        *,
        max_block_bytes: int = 256 * 1024,
        max_block_seconds: float = 60.0,
    ) -> None:
        self.begin, self.end = begin.strip(), end.strip()
        if not self.begin or not self.end or self.begin == self.end:
            raise ValueError("sentinels must be non-empty and different")
        self.max_block_bytes = max_block_bytes
        self.max_block_seconds = max_block_seconds
        self.screen = PaneScreen(max(columns, 2), max(lines, 2), self._frame)
        self._stream = make_stream(self.screen)
        self._history: list[Row] = []  # scrolled-off rows a block may still need
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._out: list[Result] = []
        self._now = 0.0
        self._open: Block | None = None  # the block still open at the last look
        self._open_since: float | None = None
        self._flagged = False  # the open block was already reported (timeout, oversize)
        self.quiet = False  # priming: remember what is seen, report nothing
        self._relook = False

    def feed(self, data: bytes, now: float) -> list[Result]:
        self._now = now
        self._stream.feed(data)
        if not self.screen.syncing:
            self._look()
        return self.tick(now)

    def prime(self, data: bytes) -> None:
        """Replay what came before the offset this reader starts at: the screen and the
        blocks seen are rebuilt, nothing is reported, and an open block's clock starts at
        the first live read (the replay's times are not real)."""
        self.quiet = True
        try:
            self.feed(data, 0.0)
        finally:
            self.quiet = False
        self._open = None
        self._open_since = None
        self._flagged = False
        self._relook = True

    def tick(self, now: float) -> list[Result]:
        """Time passes: an open block past its deadline becomes one error."""
        self._now = now
        if self._relook:  # the first live look after priming, new bytes or not
            self._relook = False
            self._look()
        block, since = self._open, self._open_since
        if (
            block is not None
            and since is not None
            and not self._flagged
            and now - since > self.max_block_seconds
        ):
            detail = f"no end sentinel within {self.max_block_seconds:g} s of the begin sentinel"
            self._report(b"t" + block.key, "unclosed_timeout", detail, block)
            self._flagged = True  # once; a later END still reads the block
        out, self._out = self._out, []
        return [] if self.quiet else out

    def resize(self, columns: int, lines: int) -> None:
        if (columns, lines) != (self.screen.columns, self.screen.lines) and columns > 1:
            self._look()  # what shows at the old size first
            self.screen.resize(max(lines, 2), columns)
            self.screen.dirty.update(range(self.screen.lines))

    def _frame(self) -> None:
        self._look()

    def _look(self) -> None:
        self._history += self.screen.take_scrolled()
        rows = self._history + self.screen.rows()
        if not any(self.begin in t for t, _ in rows):
            self._history.clear()
            self._open = self._open_since = None
            self._flagged = False
            return
        blocks = find_blocks(rows, self.begin, self.end)
        for i, block in enumerate(blocks):
            if block.closed:
                self._emit(block)
            elif i + 1 < len(blocks):
                self._abandoned(block, blocks[i + 1])
        last = blocks[-1] if blocks else None
        open_block = last if last is not None and not last.closed else None
        keep = open_block.start if open_block is not None else len(self._history)
        if open_block is None:
            self._open_since = None
            self._flagged = False
        elif self._open is None or not open_block.flat.startswith(self._open.flat):
            # Another block than the one open before (a growing block keeps its start).
            self._open_since = self._now
            self._flagged = False
        if open_block is not None and open_block.size > self.max_block_bytes:
            if not self._flagged:
                detail = f"block exceeds {self.max_block_bytes} bytes without an end sentinel"
                self._report(b"o" + open_block.key, "oversize", detail, open_block)
            self._flagged = True
            keep = len(self._history)  # what scrolled away of it is dropped: memory stays bounded
        self._open = open_block
        # Rows above the open block are never needed again; those of it are, while it grows.
        del self._history[: min(keep, len(self._history))]

    def _emit(self, block: Block) -> None:
        key = block.key
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._remember(key)
        if block.size > self.max_block_bytes:
            detail = f"block exceeds {self.max_block_bytes} bytes"
            text = excerpt("\n".join(block.lines))
            self._out.append(Invalid(reason="oversize", detail=detail, excerpt=text))
            return
        self._out.extend(parse_lines(block.lines))

    def _abandoned(self, block: Block, following: Block) -> None:
        # A frame drawn in parts shows the start of a block, then the block: one block.
        if following.flat.startswith(block.flat) or not following.closed:
            return
        self._report(b"n" + block.key, "nested_begin", "begin sentinel inside an open block", block)

    def _report(self, key: bytes, reason: str, detail: str, block: Block) -> None:
        if key in self._seen:
            return
        self._remember(key)
        text = excerpt("\n".join(block.lines))
        self._out.append(Invalid(reason=reason, detail=detail, excerpt=text))

    def _remember(self, key: bytes) -> None:
        self._seen[key] = None
        if len(self._seen) > SEEN_KEYS:
            self._seen.popitem(last=False)
