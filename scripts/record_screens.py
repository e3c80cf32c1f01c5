#!/usr/bin/env python3
"""Record the screens of the real agent CLIs in each state, for the screen-rule tests.

    .venv/bin/python scripts/record_screens.py [claude codex pi] [--out tests/fixtures/screens]

Each runtime (installed by `./dev.sh setup` into ~/.cache/agentfleet/agent-clis) runs in a
private tmux server (120x40) against the fake model (tests/support/fake_model.py) and is driven
through:
idle, a streamed answer (working), an answer before its first token (working-silent), its
interrupt (after-cancel; Codex's Ctrl-C "Task is still running" menu), a tool call needing
approval (blocked-approval; pi: after-tool, it never asks), a numbered-list prompt that looks
like a select menu (idle-draft, idle-numbered, working-numbered), and the first-run dialogs
the seeding normally prevents (blocked-trust, blocked-apikey, blocked-onboarding,
blocked-login). Every screen is saved as
`<runtime>/<state>-<n>.txt` (`tmux capture-pane -p`, as is) with the pane title in
`<state>-<n>.title`, and `<runtime>/index.json` labels each one: the state an observer should
read from it (idle, working, blocked) and what it shows.

Nothing is slept on blindly: every step waits, with a deadline, for what the screen must show.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import realcli, runtime_home  # noqa: E402
from tests.support.fake_model import FakeModel, Script, silent, stream, text, tool_call  # noqa: E402

WORDS = [f"word{i}" for i in range(48)]
# Six lines of eight words: Claude Code shows streamed text a line at a time.
SLOW_TEXT = "\n".join(" ".join(WORDS[i : i + 8]) for i in range(0, len(WORDS), 8))


def script(touch: Path) -> Script:
    return (
        Script()
        .on("quick", text("Quick answer: 42."))
        .on("silent", silent(6, "Finally an answer."))
        .on("slow", stream(SLOW_TEXT, 16))
        .on("runit", tool_call(f"touch {touch}"))
        .on("hold on", silent(6, "Held on, both noted."))
        .on("second item", text("Noted both items."))
    )


class Recorder:
    def __init__(self, out: Path, runtime: str) -> None:
        self.dir = out / runtime
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.counts: dict[str, int] = {}
        self.index: dict[str, dict[str, str]] = {}

    def save(self, pane: realcli.Pane, state: str, label: str, note: str) -> str:
        n = self.counts.get(state, 0) + 1
        self.counts[state] = n
        name = f"{state}-{n}"
        (self.dir / f"{name}.txt").write_text(pane.capture())
        (self.dir / f"{name}.title").write_text(pane.title() + "\n")
        self.index[f"{name}.txt"] = {"state": label, "note": note}
        print(f"  {name}: {label} ({note}) title={pane.title()!r}")
        return name

    def finish(self) -> None:
        (self.dir / "index.json").write_text(
            json.dumps(self.index, indent=2, sort_keys=True) + "\n"
        )


def words_shown(k: int, times: int = 1) -> Callable[[str, str], bool]:
    return lambda s, t: s.count(f"word{k} ") >= times


def record_numbered_prompts(rec: Recorder, pane: realcli.Pane, signs: realcli.Signs) -> None:
    """A numbered list typed as a prompt looks like a select menu (a cursor glyph, then
    "1. ..."): as a draft in the input, in the history while working and once answered, it
    must still read as what it is, not as a dialog."""
    pane.paste("1. first item\n2. second item")
    pane.wait_for(
        lambda s, t: "second item" in s or realcli.PASTE_PLACEHOLDER.search(s) is not None,
        10,
        what="the numbered draft in the input",
    )
    rec.save(pane, "idle-draft", "idle", "a numbered two-line draft in the input, not sent")
    pane.send_keys("Enter")
    pane.wait_for(
        lambda s, t: "Noted both items." in s and signs.is_idle(s, t),
        20,
        what="the answer to the numbered prompt",
    )
    rec.save(pane, "idle-numbered", "idle", "answered a numbered prompt: '1. first item' above")
    realcli.submit(pane, "1. hold on\n2. then answer")
    pane.wait_for(signs.is_working, 10, what="working on the numbered prompt")
    rec.save(pane, "working-numbered", "working", "a numbered prompt sent, no token yet")
    pane.wait_for(
        lambda s, t: "Held on, both noted." in s and signs.is_idle(s, t),
        20,
        what="the answer to the second numbered prompt",
    )


def unseen_claude_onboarding(launch: runtime_home.Launch) -> None:
    state_file = launch.config_dir / ".claude.json"
    state = json.loads(state_file.read_text())
    state["hasCompletedOnboarding"] = False
    state_file.write_text(json.dumps(state, indent=2))


def no_claude_key(launch: runtime_home.Launch) -> None:
    del launch.env["ANTHROPIC_API_KEY"]


def no_codex_provider(launch: runtime_home.Launch) -> None:
    config = launch.config_dir / "config.toml"
    lines = config.read_text().splitlines()
    config.write_text("\n".join(x for x in lines if not x.startswith("model_provider =")) + "\n")
    del launch.env["FAKE_MODEL_API_KEY"]


# (runtime, work dir suffix, file state, what the seeding leaves out)
FIRST_RUN: list[tuple[str, str, str, Callable[[runtime_home.Launch], None], str]] = [
    ("claude", "onboarding", "blocked-onboarding", unseen_claude_onboarding, "onboarding not done"),
    ("claude", "login", "blocked-login", no_claude_key, "no ANTHROPIC_API_KEY, not logged in"),
    ("codex", "login", "blocked-login", no_codex_provider, "no provider configured, no login"),
]


# What the operator has to deal with before the runtime can work: the harness' own list of
# first-run dialogs, plus Claude Code's "Not logged in · Run /login" (with no key it starts at
# an input box that cannot send anything).
NEEDS_OPERATOR = re.compile(realcli.FIRST_RUN_DIALOGS.pattern + r"|Not logged in", re.I)


def record_first_run(
    rec: Recorder, tmux: realcli.Tmux, model: FakeModel, work: Path, runtime: str, binary: Path
) -> None:
    """The first-run dialogs the seeding prevents, one left out at a time. The label comes
    from the test harness' own list of such dialogs (NEEDS_OPERATOR), not from the rules
    under test; a runtime that skips the dialog is recorded as the idle it shows."""
    signs = realcli.SIGNS[runtime]
    for rt, suffix, state, tweak, note in FIRST_RUN:
        if rt != runtime:
            continue
        root = work / f"{runtime}-{suffix}"
        launch = runtime_home.seed(runtime, root, root / "project", model.url, binary=str(binary))
        tweak(launch)
        pane = tmux.start(suffix, launch.argv, realcli.node_path_env(launch.env), launch.cwd)
        try:
            pane.wait_for(NEEDS_OPERATOR, 20, what=f"a first-run dialog ({note})")
            rec.save(pane, state, "blocked", note)
        except realcli.Timeout:
            pane.wait_for(signs.is_idle, 10, what=f"idle, no first-run dialog ({note})")
            rec.save(pane, f"idle-{suffix}", "idle", note)
        tmux.run("kill-session", "-t", suffix, check=False)


def record_codex_daemon_menu(
    rec: Recorder, tmux: realcli.Tmux, model: FakeModel, work: Path, binary: Path
) -> None:
    """Codex as users run it by default, on its background app-server daemon: Ctrl-C while it
    works opens the "Task is still running" menu (with --no-daemon it interrupts at once)."""
    signs = realcli.SIGNS["codex"]
    pane, launch = realcli.start_runtime(
        tmux, "codex", work / "codex-daemon", model.url, name="daemon", binary=binary, daemon=True
    )
    try:
        pane.wait_for(signs.is_idle, 30, what="idle (daemon)")
        realcli.submit(pane, "slow stream on the daemon")
        model.wait_for_prompt("slow stream on the daemon", 10)
        pane.wait_for(words_shown(2), 15, what="word2 streamed")
        pane.send_keys("C-c")
        pane.wait_for("Task is still running", 5, what="codex's Ctrl-C menu")
        rec.save(
            pane,
            "blocked-task-menu",
            "blocked",
            "Ctrl-C while working (daemon mode): 'Task is still running' menu",
        )
        pane.send_keys("Escape")  # back to the running task
        pane.wait_gone("Task is still running", 5)
        pane.wait_for(words_shown(12), 15, what="word12 streamed")
        rec.save(pane, "working", "working", "back from the Ctrl-C menu, still streaming")
        pane.send_keys("Escape")
        pane.wait_for(
            lambda s, t: "Conversation interrupted" in s and signs.is_idle(s, t),
            10,
            what="the interrupt (daemon)",
        )
    finally:
        tmux.run("kill-session", "-t", "daemon", check=False)
        runtime_home.stop_codex_daemon(launch)


def record_runtime(runtime: str, out: Path, work: Path) -> None:
    binary = realcli.cli_path(runtime)
    if binary is None:
        print(f"{runtime}: not installed in {realcli.cli_bin_dir()} (./dev.sh setup)")
        return
    signs = realcli.SIGNS[runtime]
    rec = Recorder(out, runtime)
    touch = work / f"touched-{runtime}"
    print(f"{runtime}:")
    with FakeModel(script(touch)) as model, realcli.Tmux(f"rec-{runtime}") as tmux:
        pane, _ = realcli.start_runtime(tmux, runtime, work / runtime, model.url, binary=binary)
        pane.wait_for(signs.is_idle, 30, what="idle")
        rec.save(pane, "idle", "idle", "fresh start, seeded home")

        realcli.submit(pane, "quick question please")
        pane.wait_for(
            lambda s, t: "Quick answer: 42." in s and signs.is_idle(s, t),
            20,
            what="the quick answer",
        )
        rec.save(pane, "idle", "idle", "after a short answer")

        realcli.submit(pane, "stay silent first")
        model.wait_for_prompt("stay silent", 10)
        pane.wait_for(signs.is_working, 10, what="working before the first token")
        rec.save(pane, "working-silent", "working", "request sent, no token yet")
        pane.wait_for(
            lambda s, t: "Finally an answer." in s and signs.is_idle(s, t),
            20,
            what="the silent answer",
        )

        realcli.submit(pane, "slow stream please")
        model.wait_for_prompt("slow stream", 10)
        for k in (2, 10, 20):
            pane.wait_for(words_shown(k), 15, what=f"word{k} streamed")
            rec.save(pane, "working", "working", f"streaming, word{k} shown")
        pane.send_keys("Escape")
        cancelled = {
            "claude": "Interrupted",
            "codex": "Conversation interrupted",
            "pi": "Operation aborted",
        }[runtime]
        pane.wait_for(lambda s, t: cancelled in s and signs.is_idle(s, t), 10, what="the interrupt")
        rec.save(pane, "after-cancel", "idle", "Escape during streaming")

        if runtime == "claude":
            realcli.submit(pane, "slow stream again")
            model.wait_for_prompt("slow stream again", 10)
            pane.wait_for(words_shown(2, times=2), 15, what="word2 streamed again")
            pane.send_keys("C-c")
            pane.wait_for(
                lambda s, t: s.count("Interrupted") >= 2 and signs.is_idle(s, t),
                10,
                what="the Ctrl-C interrupt",
            )
            rec.save(pane, "after-cancel", "idle", "Ctrl-C during streaming")

        # Before the tool call: after it, a prompt is sent along with the tool's result.
        record_numbered_prompts(rec, pane, signs)

        realcli.submit(pane, "please runit now")
        model.wait_for_prompt("runit", 10)
        if signs.approval is not None:
            pane.wait_for(signs.is_blocked, 15, what="the approval dialog")
            rec.save(pane, "blocked-approval", "blocked", "shell tool call awaiting approval")
            first_title = pane.title()
            if runtime == "codex":  # its title blinks between "[ ! ]" and "[ . ]"
                try:
                    pane.wait_for(lambda s, t: t != first_title, 3, what="the title blink")
                    rec.save(pane, "blocked-approval", "blocked", "same dialog, title blinked")
                except realcli.Timeout:
                    pass
            pane.send_keys("Escape")
            pane.wait_for(lambda s, t: signs.is_idle(s, t), 15, what="idle after declining")
            rec.save(pane, "after-decline", "idle", "Escape on the approval dialog")
        else:
            pane.wait_for(
                lambda s, t: "The command finished." in s and signs.is_idle(s, t),
                15,
                what="the tool run and the answer",
            )
            rec.save(
                pane, "after-tool", "idle", "bash tool ran without asking (pi has no approvals)"
            )

        if runtime == "claude":
            pane2, _ = realcli.start_runtime(
                tmux,
                runtime,
                work / "claude-untrusted",
                model.url,
                name="untrusted",
                binary=binary,
                trust=False,
            )
            pane2.wait_for("Yes, I trust this folder", 30, what="the trust dialog")
            rec.save(pane2, "blocked-trust", "blocked", "first run in an untrusted folder")
            pane3, _ = realcli.start_runtime(
                tmux,
                runtime,
                work / "claude-key",
                model.url,
                name="key",
                binary=binary,
                approve_key=False,
            )
            pane3.wait_for(
                lambda s, t: "API key" in s or signs.is_idle(s, t), 30, what="the API-key dialog"
            )
            rec.save(
                pane3,
                "blocked-apikey",
                "blocked" if "API key" in pane3.capture() else "idle",
                "ANTHROPIC_API_KEY not yet approved",
            )
        if runtime == "codex":
            record_codex_daemon_menu(rec, tmux, model, work, binary)
            # Codex asks about trust only for a folder inside a git repository.
            (work / "codex-untrusted" / "project").mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "-q", str(work / "codex-untrusted" / "project")], check=True
            )
            pane2, _ = realcli.start_runtime(
                tmux,
                runtime,
                work / "codex-untrusted",
                model.url,
                name="untrusted",
                binary=binary,
                trust=False,
            )
            pane2.wait_for(
                lambda s, t: "Trust this folder?" in s or signs.is_idle(s, t),
                30,
                what="the trust dialog or idle",
            )
            trust = "Trust this folder?" in pane2.capture()
            rec.save(
                pane2,
                "blocked-trust" if trust else "idle-untrusted",
                "blocked" if trust else "idle",
                "first run in an untrusted folder",
            )
        record_first_run(rec, tmux, model, work, runtime, binary)
    rec.finish()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runtimes", nargs="*", default=list(realcli.PINNED))
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "screens")
    args = ap.parse_args()
    # A fixed directory, so the paths on the recorded screens are the same on every run.
    work = Path(tempfile.gettempdir()) / "agentfleet-record"
    for runtime in args.runtimes:
        shutil.rmtree(work / runtime, ignore_errors=True)
        for extra in ("untrusted", "key", "daemon", "onboarding", "login"):
            shutil.rmtree(work / f"{runtime}-{extra}", ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        record_runtime(runtime, args.out, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
