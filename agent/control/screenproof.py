"""Reading a session's screen for steering: what `send` refuses, and what proves it landed.

Pure functions on captured rows (`capture-pane -p`, top to bottom), so they are tested on
recorded screens without tmux.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.discovery.detect import Match
from protocol.commands import Outcome
from protocol.heartbeat import SessionState

EXCERPT_LINES = 12
NEEDLE_CHARS = 20
# What a long paste shows in the input box instead of the text: Claude Code "[Pasted text
# #1]", Codex "[Pasted Content 1206 chars]", pi "[paste #1 1206 chars]" (docs/runtimes.md).
PASTE_PLACEHOLDER = re.compile(r"\[(Pasted text #\d+|Pasted Content \d+ chars|paste #\d+)")


@dataclass(frozen=True, slots=True)
class Outcomes:
    outcome: Outcome
    message: str
    screen: str | None = None
    details: dict[str, object] | None = None


def excerpt(lines: list[str]) -> str:
    kept = [ln.rstrip() for ln in lines if ln.strip()]
    return "\n".join(kept[-EXCERPT_LINES:])


def question(match: Match) -> str:
    """What a blocked screen asks: the row (or title) the blocking rule matched."""
    return (match.line or match.rule).strip(" │┃|╭╮╰╯─\t")


def needle(text: str) -> str:
    """A piece of `text` its input box shows on one row: the first words of its first
    non-empty line, at most NEEDLE_CHARS (a long word wraps: "long-5d1b xxxx…" shows as
    "long-5d1b" over the x's), or the start of a first word longer than that."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    words = first.split()
    piece = words[0][:NEEDLE_CHARS] if words else ""
    for word in words[1:]:
        if len(piece) + 1 + len(word) > NEEDLE_CHARS:
            break
        piece += " " + word
    return piece


def shows(line: str, piece: str) -> bool:
    """Does a row show `piece` of the text, or a paste placeholder?"""
    return bool(piece and piece in line) or PASTE_PLACEHOLDER.search(line) is not None


def text_rows(lines: list[str], piece: str) -> list[int]:
    """Rows (0-based) that show `piece` or a paste placeholder."""
    return [i for i, ln in enumerate(lines) if shows(ln, piece)]


def input_row(lines: list[str], piece: str) -> int | None:
    """Where the input box holds the text: the lowest row showing it, counted in non-empty
    rows up from the last one (the input box sits at the bottom of every TUI here, over at
    most a footer). None when the text shows nowhere."""
    filled = [ln for ln in lines if ln.strip()]
    for distance, line in enumerate(reversed(filled)):
        if shows(line, piece):
            return distance
    return None


def left_input(lines: list[str], piece: str, row: int) -> bool:
    """The text left the input box: the row that held it (`input_row` before the submit key)
    shows it no more. Once taken, the text moves up into the transcript and the emptied box
    is back at that row; a prompt still waiting there shows it at the same place."""
    filled = [ln for ln in lines if ln.strip()]
    return row >= len(filled) or not shows(filled[-1 - row], piece)


def with_details(out: Outcomes, **details: object) -> Outcomes:
    return Outcomes(out.outcome, out.message, out.screen, {**(out.details or {}), **details})


def refusal(match: Match, lines: list[str], **details: object) -> Outcomes:
    asks = question(match)
    return Outcomes(
        Outcome.BLOCKED,
        f"blocked: {asks} (nothing was typed; answer it with `fleet answer` or `send --answer`)",
        screen=excerpt(lines),
        details={"state": "blocked", "question": asks, "rule": match.rule, **details},
    )


def delivered(proof: str, state: SessionState, match: Match, enters: int) -> Outcomes:
    what = {
        "hook": "the runtime reported the prompt submitted",
        "run.started": "the runtime started a run",
        "input:left": "the text left the input box",
    }.get(proof, f"the session is {state.value}")
    if state is SessionState.BLOCKED:
        what += f", and now asks: {question(match)}"
    return Outcomes(
        Outcome.DELIVERED,
        f"delivered: {what}",
        details={"proof": proof, "rule": match.rule, "enters": enters, "state": state.value},
    )
