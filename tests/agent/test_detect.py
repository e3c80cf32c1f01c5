"""Runtime specs and screen-state detection.

Screen fixtures live in fixtures/screens/<runtime>/<state>-<n>.txt; the expected state is
the file name's prefix (a SessionState value). An optional first line ``#title: ...`` is
the pane title. Stub screens were recorded from the real stub in tmux; claude/working-3 from
Claude Code 2.1.197 (a prompt before its first token: only the title spinner tells); the
others follow public captures of older versions of those TUIs. The screens recorded from the
pinned real CLIs are in tests/fixtures/screens (tests/agent/test_detect_corpus.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.discovery.detect import Match, StateTracker, bottom_lines, classify
from agent.discovery.runtimes import (
    DetectionRules,
    Rule,
    RuntimeSpec,
    RuntimeSpecError,
    load_runtimes,
    observed_runtime,
)
from protocol.heartbeat import SessionState

SCREENS = Path(__file__).parent / "fixtures" / "screens"
SPECS = load_runtimes()
BUILTIN = ("claude", "codex", "pi", "shell", "stub")


def load_fixture(path: Path) -> tuple[list[str], str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    title = ""
    if lines and lines[0].startswith("#title: "):
        title = lines.pop(0).removeprefix("#title: ")
    return lines, title


FIXTURES = sorted(SCREENS.glob("*/*.txt"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_screens_classify_as_named(path: Path) -> None:
    screen, title = load_fixture(path)
    expected = SessionState(path.stem.rsplit("-", 1)[0])
    match = classify(screen, title, SPECS[path.parent.name].rules)
    assert match.state is expected, match


@pytest.mark.parametrize("runtime", BUILTIN)
def test_every_runtime_has_idle_working_and_blocked_fixtures(runtime: str) -> None:
    states = {p.stem.rsplit("-", 1)[0] for p in (SCREENS / runtime).glob("*.txt")}
    assert {"idle", "working", "blocked"} <= states


RULES = DetectionRules(
    blocked=[Rule("question", r"\?\s*\[y/N\]")],
    busy=[Rule("spinner", r"esc to interrupt")],
    idle=[Rule("prompt", r"^> ?$")],
    title_busy=[Rule("title-spin", r"^\*")],
    title_idle=[Rule("title-idle", r"^idle$")],
    bottom_lines=3,
    debounce_s=0.5,
)


def test_blocked_outranks_busy_outranks_idle() -> None:
    screen = ["esc to interrupt", "Go? [y/N]", ">"]
    assert classify(screen, "", RULES) == Match(
        SessionState.BLOCKED, "question", "screen", 2, "Go? [y/N]"
    )
    assert classify(screen[0::2], "", RULES).state is SessionState.WORKING
    assert classify(screen[2:], "", RULES).state is SessionState.IDLE


def test_only_the_bottom_non_empty_lines_count() -> None:
    # The question scrolled above the bottom 3 non-empty rows: it is history.
    screen = ["Go? [y/N]", "", "a", "", "b", ">", "", ""]  # rows 1-8
    assert [no for no, _ in bottom_lines(screen, 3)] == [3, 5, 6]
    match = classify(screen, "", RULES)
    assert (match.state, match.line_no, match.line) == (SessionState.IDLE, 6, ">")


def test_the_reported_row_is_the_most_recent_occurrence() -> None:
    match = classify(["esc to interrupt", "x", "esc to interrupt (2)"], "", RULES)
    assert (match.line_no, match.line) == (3, "esc to interrupt (2)")


def test_title_rules_and_the_default() -> None:
    assert classify(["nothing known"], "* busy", RULES) == Match(
        SessionState.WORKING, "title-spin", "title", None, "* busy"
    )
    # A screen rule of a higher state outranks a title rule of a lower one, and vice versa.
    assert classify([">"], "* busy", RULES).state is SessionState.WORKING
    assert classify(["Go? [y/N]"], "idle", RULES).state is SessionState.BLOCKED
    assert classify(["nothing known"], "", RULES) == Match(
        SessionState.UNKNOWN, "no-match", "default", None, None
    )
    assert classify([], "", RULES).state is SessionState.UNKNOWN


def test_a_whole_capture_as_one_string_is_split_into_rows() -> None:
    assert classify("a\nGo? [y/N]\n", "", RULES).state is SessionState.BLOCKED  # type: ignore[arg-type]


def test_tracker_reports_a_state_only_after_it_held_the_debounce() -> None:
    tracker = StateTracker(RULES)
    assert (tracker.state, tracker.since, tracker.last_match) == (SessionState.UNKNOWN, None, None)
    assert tracker.observe([">"], "", 10.0) == (SessionState.UNKNOWN, False)
    assert tracker.pending is SessionState.IDLE
    assert tracker.last_match is not None and tracker.last_match.rule == "prompt"
    assert tracker.observe([">"], "", 10.4) == (SessionState.UNKNOWN, False)
    assert tracker.observe([">"], "", 10.5) == (SessionState.IDLE, True)
    assert tracker.since == 10.0  # when it was first seen
    assert tracker.observe([">"], "", 11.0) == (SessionState.IDLE, False)
    assert tracker.pending is None


def test_tracker_ignores_flicker_and_restarts_the_clock_per_candidate() -> None:
    tracker = StateTracker(RULES)
    tracker.observe([">"], "", 0.0)
    tracker.observe([">"], "", 1.0)
    # A redraw caught half-way: working for one tick, then idle again.
    assert tracker.observe(["esc to interrupt"], "", 2.0) == (SessionState.IDLE, False)
    assert tracker.observe([">"], "", 2.1) == (SessionState.IDLE, False)
    assert tracker.observe(["Go? [y/N]"], "", 3.0) == (SessionState.IDLE, False)
    assert tracker.observe(["esc to interrupt"], "", 3.3) == (SessionState.IDLE, False)
    assert tracker.observe(["esc to interrupt"], "", 3.7) == (SessionState.IDLE, False)
    assert tracker.observe(["esc to interrupt"], "", 3.8) == (SessionState.WORKING, True)
    assert tracker.since == 3.3


def test_zero_debounce_reports_at_once() -> None:
    tracker = StateTracker(DetectionRules(idle=[Rule("p", ">")], debounce_s=0))
    assert tracker.observe([">"], "", 5.0) == (SessionState.IDLE, True)
    assert tracker.since == 5.0


def test_a_row_below_matching_unless_below_voids_the_rule() -> None:
    rules = DetectionRules(
        blocked=[Rule("menu", r"^> \d\. ", unless_below=r"^\$\s*$")],
        idle=[Rule("prompt", r"^\$\s*$")],
    )
    menu = ["> 1. Yes", "  2. No"]
    assert classify(menu, "", rules) == Match(SessionState.BLOCKED, "menu", "screen", 1, "> 1. Yes")
    # The same rows above the live prompt are history; below it, a menu again.
    assert classify([*menu, "$ "], "", rules).rule == "prompt"
    assert classify(["$ ", *menu], "", rules).rule == "menu"
    # A row matching both is not below itself.
    both = DetectionRules(blocked=[Rule("x", "x", unless_below="x")])
    assert classify(["x"], "", both).state is SessionState.BLOCKED


def test_builtin_specs_load() -> None:
    assert set(BUILTIN) <= set(SPECS)
    assert all(name == spec.name for name, spec in SPECS.items())
    assert SPECS["stub"].interrupt_key == "C-c"
    assert SPECS["claude"].interrupt_key == "Escape"
    assert SPECS["shell"].rules.bottom_lines == 1


def test_extra_dir_overrides_and_extends(tmp_path: Path) -> None:
    (tmp_path / "claude.toml").write_text('process_patterns = ["^my-claude$"]\n')
    (tmp_path / "aider.toml").write_text(
        'name = "aider"\nprocess_patterns = ["aider"]\n'
        '[[rules.blocked]]\nname = "yes-no"\npattern = "\\\\(Y\\\\)es/\\\\(N\\\\)o"\n'
    )
    specs = load_runtimes(tmp_path)
    assert specs["claude"].process_patterns == ["^my-claude$"]
    assert specs["claude"].rules == DetectionRules()  # the whole file replaces the built-in
    assert classify(["Run it? (Y)es/(N)o"], "", specs["aider"].rules).state is (
        SessionState.BLOCKED
    )
    assert specs["stub"] == SPECS["stub"]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("process_patterns = [", "cannot read TOML"),
        ('process_patterns = ["("]', "process_patterns[0]: bad regex"),
        (
            'process_patterns = []\n[[rules.busy]]\nname = "spin"\npattern = "[x"',
            "rules.busy 'spin': bad regex",
        ),
        ("process_patterns = []\n[rules]\nbottom_line = 3", "unknown field `bottom_line`"),
        ("process_patterns = []\n[rules]\nbottom_lines = 0", "bottom_lines"),
        ('name = "other"\nprocess_patterns = []', "does not match the file name"),
        ("interactive = true", "process_patterns"),
        (
            'process_patterns = []\n[[rules.blocked]]\nname = "m"\npattern = "x"\n'
            'unless_below = "(("',
            "rules.blocked 'm' unless_below: bad regex",
        ),
    ],
)
def test_bad_specs_are_refused_naming_the_file(tmp_path: Path, text: str, complaint: str) -> None:
    (tmp_path / "mine.toml").write_text(text)
    with pytest.raises(RuntimeSpecError) as info:
        load_runtimes(tmp_path)
    assert str(tmp_path / "mine.toml") in str(info.value)
    assert complaint in str(info.value)


def test_a_missing_extra_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSpecError, match="does not exist"):
        load_runtimes(tmp_path / "nope")


PY = "/home/dev/project/.venv/bin/python"


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ([f"{PY} /home/dev/project/.venv/bin/fleet-agent stub --work-seconds 1"], "stub"),
        ([f"{PY} -m agent stub --emit none"], "stub"),
        ([f"{PY} -m agent.stub"], "stub"),
        (["-bash", f"{PY} -m agent stub"], "stub"),
        (["node /usr/local/bin/claude --dangerously-skip-permissions"], "claude"),
        (["/home/dev/.local/bin/claude"], "claude"),
        (["bash", "node /usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"], "claude"),
        (["claude", "/bin/bash -c -l npm test", "node jest"], "claude"),  # its tool shells
        (
            ["zsh", "node /usr/local/bin/codex", "/usr/lib/codex/codex-x86_64-unknown-linux-musl"],
            "codex",
        ),
        (["codex --yolo"], "codex"),
        (["bash", "pi --model sonnet"], "pi"),
        (["node /usr/local/lib/node_modules/@mariozechner/pi-coding-agent/dist/cli.js"], "pi"),
        (["bash", "/usr/bin/pip install requests"], "shell"),
        (["bash", "python -m pip install pi"], "shell"),
        (["bash", "vim notes.txt"], "shell"),
        (["/bin/zsh"], "shell"),
        (["-bash"], "shell"),
        (["dash"], "shell"),
        (["sleep 100", "bash"], None),  # a shell below something unknown is not "shell"
        (["htop"], None),
        (["", "bash"], None),
        ([], None),
    ],
)
def test_observed_runtime(tree: list[str], expected: str | None) -> None:
    assert observed_runtime(tree, SPECS) == expected


def test_the_runtime_nearest_the_root_wins() -> None:
    assert observed_runtime(["bash", "codex", "claude"], SPECS) == "codex"


def test_observed_runtime_without_a_shell_spec() -> None:
    specs = {"x": RuntimeSpec(name="x", process_patterns=["^x$"])}
    assert observed_runtime(["bash"], specs) is None
    assert observed_runtime(["bash", "x"], specs) == "x"


# --- the idle-menu trap: a dialog no rule names must not read idle ---------------------------

# The cursor glyphs, spelled out: U+276F (Claude Code's) and U+203A (Codex's).
CL, CX = "\u276f", "\u203a"

# History rows a session shows above whatever comes next, per runtime (2.1.197 / 0.171.0 /
# 0.73.1 layout; a numbered prompt included, since it looks like a menu).
HISTORY = {
    "claude": [f"{CL} 1. first item", "  2. second item", "", "● Noted both items.", ""],
    "codex": [f"{CX} 1. first item", "  2. second item", "", "• Noted both items.", ""],
    "pi": [" 1. first item", " 2. second item", "", " Noted both items.", ""],
}
# A dialog none of the specs knows: a question and numbered choices under a cursor, no footer.
UNKNOWN_MENU = {
    "claude": [
        " Pick a colour scheme for diffs",
        "",
        f" {CL} 1. Dark",
        "   2. Light",
        "   3. Auto",
    ],
    "codex": ["  Pick a colour scheme for diffs", "", f"{CX} 1. Dark", "  2. Light", "  3. Auto"],
    "pi": [" Pick a colour scheme for diffs", "", " → 1. Dark", "   2. Light", "   3. Auto"],
}
# The bottom of each runtime's idle screen: input box, status line and footer.
IDLE_TAIL = {
    "claude": ["─" * 40, f"{CL}\u00a0", "─" * 40, "  ? for shortcuts · ← for agents"],
    "codex": [
        f"{CX} Ask Codex to do anything",
        "",
        "  gpt-5 medium · ~/project · pick a scheme",
        "  ← for agents · ? for shortcuts",
    ],
    "pi": ["─" * 40, "", "─" * 40, "~/project", "↑10 ↓10 0.4%/200k (auto)      fake-model"],
}
TITLE = {"claude": "✳ Claude Code", "codex": "pick a scheme | project", "pi": "π - project"}


@pytest.mark.parametrize("runtime", ["claude", "codex", "pi"])
def test_an_unknown_select_menu_reads_blocked(runtime: str) -> None:
    screen = [*HISTORY[runtime], *UNKNOWN_MENU[runtime]]
    match = classify(screen, TITLE[runtime], SPECS[runtime].rules)
    assert (match.state, match.rule) == (SessionState.BLOCKED, "select-menu"), match
    assert match.line is not None and "1. Dark" in match.line


@pytest.mark.parametrize("runtime", ["claude", "codex", "pi"])
def test_a_dialog_outranks_the_footer_that_stays_under_it(runtime: str) -> None:
    # pi's footer (context use) shows under a dialog too; a menu above it is still a question.
    if runtime == "pi":
        screen = [*HISTORY[runtime], *UNKNOWN_MENU[runtime], *IDLE_TAIL[runtime][3:]]
        assert classify(screen, TITLE[runtime], SPECS[runtime].rules).rule == "select-menu"
    # Claude and Codex replace their input box with the dialog; a menu above the live box is
    # a prompt in the history, hence idle.
    else:
        screen = [*UNKNOWN_MENU[runtime], "", *IDLE_TAIL[runtime]]
        assert classify(screen, TITLE[runtime], SPECS[runtime].rules).state is SessionState.IDLE


@pytest.mark.parametrize("runtime", ["claude", "codex", "pi"])
def test_a_numbered_prompt_in_the_history_reads_idle(runtime: str) -> None:
    screen = [*HISTORY[runtime], *IDLE_TAIL[runtime]]
    assert classify(screen, TITLE[runtime], SPECS[runtime].rules).state is SessionState.IDLE


def test_codex_menu_while_the_title_spins_reads_blocked() -> None:
    # Codex keeps its title spinner under a dialog raised while a task runs.
    screen = [*HISTORY["codex"], *UNKNOWN_MENU["codex"]]
    match = classify(screen, "⠋ pick a scheme | project", SPECS["codex"].rules)
    assert (match.state, match.rule) == (SessionState.BLOCKED, "select-menu")


def test_codex_action_required_title_reads_blocked() -> None:
    match = classify(["anything"], "[ ! ] Action Required | t | project", SPECS["codex"].rules)
    assert (match.state, match.rule) == (SessionState.BLOCKED, "title-action-required")


@pytest.mark.parametrize(
    ("runtime", "rows", "rule"),
    [
        (
            "claude",
            [" Select login method:", "", f" {CL} 1. Claude account with subscription"],
            "login",
        ),
        (
            "claude",
            [" Choose the text style that looks best with your terminal", f" {CL} 1. Dark mode"],
            "onboarding-theme",
        ),
        (
            "claude",
            [" Some new question?", "", " Enter to confirm · Esc to cancel"],
            "dialog-footer",
        ),
        ("codex", ["  Sign in with ChatGPT to use Codex"], "login"),
        (
            "codex",
            ["  Something new?", "", "  Press enter to confirm or esc to cancel"],
            "dialog-footer",
        ),
        (
            "pi",
            [" Import session", " → Yes", "   No", " ↑↓ navigate  enter select  esc cancel"],
            "select-dialog",
        ),
    ],
)
def test_dialogs_from_the_cli_sources_are_named(runtime: str, rows: list[str], rule: str) -> None:
    # Strings taken from the pinned CLIs' own sources for dialogs the corpus has no screen of.
    match = classify(rows, "", SPECS[runtime].rules)
    assert (match.state, match.rule) == (SessionState.BLOCKED, rule), match


def test_claude_title_alone_never_says_idle() -> None:
    # "✳ Claude Code" shows under dialogs as well: a screen no rule knows stays unknown.
    match = classify(
        ["Something only a future version draws"], "✳ Claude Code", SPECS["claude"].rules
    )
    assert match.state is SessionState.UNKNOWN
