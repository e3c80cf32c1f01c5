"""Every labelled screen of the corpus reads as labelled, with the shipped runtime specs.

The corpus (bench/detect_accuracy.py loads it, and reports the same figures as accuracy):
tests/fixtures/screens/<runtime>/ recorded from the pinned real CLIs by
scripts/record_screens.py, labelled in index.json, and the hand-made screens of older
versions in tests/agent/fixtures/screens/<runtime>/, labelled by file name. A failure names
the screen, its label and note, and the rule and row that decided instead.
"""

from __future__ import annotations

import json

import pytest

from agent.discovery.runtimes import load_runtimes
from bench.detect_accuracy import RECORDED, Screen, check, load_corpus, load_recorded
from protocol.heartbeat import SessionState

SPECS = load_runtimes()
CORPUS = load_corpus()
REAL = ("claude", "codex", "pi")


def explain(screen: Screen) -> str:
    match = check(screen, SPECS)
    return (
        f"{screen.path}: labelled {screen.expected.value} ({screen.note or 'hand-made'}), "
        f"read {match.state.value} by rule {match.rule!r} ({match.source}, "
        f"row {match.line_no}: {match.line!r}; title {screen.title!r})"
    )


@pytest.mark.parametrize("screen", CORPUS, ids=lambda s: s.label)
def test_screen_reads_as_labelled(screen: Screen) -> None:
    assert check(screen, SPECS).state is screen.expected, explain(screen)


def test_no_dialog_reads_idle() -> None:
    # The safety property on its own line: a dialog read as idle is one `fleet send` types into.
    dialogs = [s for s in CORPUS if s.expected is SessionState.BLOCKED]
    read_idle = [explain(s) for s in dialogs if check(s, SPECS).state is SessionState.IDLE]
    assert len(dialogs) >= 10
    assert read_idle == []


@pytest.mark.parametrize("runtime", REAL)
def test_the_recorded_corpus_is_complete(runtime: str) -> None:
    # Every recorded screen is labelled (none is silently left out), every label has its
    # screen and title, and each runtime shows idle and working (and blocked, but pi never asks).
    folder = RECORDED / runtime
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    assert sorted(index) == sorted(p.name for p in folder.glob("*.txt"))
    assert all((folder / name).with_suffix(".title").exists() for name in index)
    states = {s.expected for s in load_recorded() if s.runtime == runtime}
    wanted = {SessionState.IDLE, SessionState.WORKING}
    if runtime != "pi":
        wanted.add(SessionState.BLOCKED)
    assert wanted <= states


@pytest.mark.parametrize(
    ("runtime", "screen", "rule"),
    [
        ("claude", "blocked-trust-1.txt", "trust-folder"),
        ("claude", "blocked-apikey-1.txt", "api-key"),
        ("claude", "blocked-approval-1.txt", "proceed-question"),
        ("claude", "blocked-onboarding-1.txt", "onboarding-theme"),
        ("claude", "blocked-login-1.txt", "login"),
        ("codex", "blocked-trust-1.txt", "trust-folder"),
        ("codex", "blocked-task-menu-1.txt", "task-menu"),
        ("codex", "blocked-approval-1.txt", "run-command-question"),
        ("codex", "blocked-login-1.txt", "login"),
    ],
)
def test_recorded_dialogs_are_named(runtime: str, screen: str, rule: str) -> None:
    # `fleet explain` must say which dialog waits: the specific rule, not the generic menu one.
    (found,) = [s for s in load_recorded() if s.runtime == runtime and s.path.name == screen]
    assert check(found, SPECS).rule == rule, explain(found)


@pytest.mark.parametrize(
    ("runtime", "screen"),
    [
        ("codex", "working-1.txt"),
        ("codex", "working-3.txt"),
        ("codex", "working-4.txt"),
    ],
)
def test_codex_streaming_reads_working_from_the_title(runtime: str, screen: str) -> None:
    (found,) = [s for s in load_recorded() if s.runtime == runtime and s.path.name == screen]
    match = check(found, SPECS)
    assert (match.state, match.rule, match.source) == (
        SessionState.WORKING,
        "title-spinner",
        "title",
    ), explain(found)
