#!/usr/bin/env python3
"""Record the screens of the real agent CLIs in each state, for the screen-rule tests.

    .venv/bin/python scripts/record_screens.py [claude codex pi] [--out tests/fixtures/screens]

Each runtime (installed by `./dev.sh setup` into ~/.cache/agentfleet/agent-clis) runs in a
private tmux server (120x40) against the fake model (tests/support/fake_model.py) and is driven
through:
idle, a streamed answer (working), an answer before its first token (working-silent), its
interrupt (after-cancel; Codex's Ctrl-C "Task is still running" menu), a tool call needing
approval (blocked-approval; pi: after-tool, it never asks), and the first-run dialogs the
seeding normally prevents (blocked-trust, blocked-apikey). Every screen is saved as
`<runtime>/<state>-<n>.txt` (`tmux capture-pane -p`, as is) with the pane title in
`<state>-<n>.title`, and `<runtime>/index.json` labels each one: the state an observer should
read from it (idle, working, blocked) and what it shows.

Nothing is slept on blindly: every step waits, with a deadline, for what the screen must show.
"""

from __future__ import annotations

import argparse
import json
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
        for extra in ("untrusted", "key", "daemon"):
            shutil.rmtree(work / f"{runtime}-{extra}", ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        record_runtime(runtime, args.out, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
