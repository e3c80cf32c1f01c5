"""What a session's launch needs for its runtime's own signals to reach the host agent.

`hook_launch_args(runtime, session, state_dir)` → a `HookLaunch`: argv to append to the
runtime's command, environment to add, files to write first. Every hook ends in
`python -m agent.hooks.send`, which appends to `<state_dir>/hooks/<session>.jsonl`.

- claude: `--settings <file>` with our hooks. `--settings` is one more settings *source*:
  Claude Code merges it with the user's, project and local settings and runs the hooks of
  every source, so the user's own hooks and settings stay (test_real_hooks proves it).
- codex: `-c notify=[…]` (`agent-turn-complete`). `notify` holds one command, so the user's
  own (from `$CODEX_HOME/config.toml`) is chained: ours runs it after spooling (`--then`).
- pi: `-e <agent/hooks/pi_extension.ts>`, which appends to the spool itself (no subprocess).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.uid import Identity, private_dir

HOOKED_RUNTIMES = ("claude", "codex", "pi")
CLAUDE_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "Notification",
    "Stop",
    "SubagentStop",
)
CLAUDE_MATCHERS = {
    "PreToolUse": "*",
    "PostToolUse": "*",
    "Notification": "permission_prompt|idle_prompt|elicitation_dialog",
}
PI_EXTENSION = Path(__file__).with_name("pi_extension.ts")


@dataclass(frozen=True)
class HookLaunch:
    argv: list[str] = field(default_factory=list)  # appended to the runtime's command
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)  # written before the launch

    def write_files(self) -> None:
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o644)  # the session may run as the tenant's user


def spool_dir(state_dir: Path) -> Path:
    return state_dir / "hooks"


def spool_path(state_dir: Path, session: str) -> Path:
    return spool_dir(state_dir) / f"{session}.jsonl"


def sender_argv(spool: Path, runtime: str, session: str, python: str | None = None) -> list[str]:
    return [
        python or sys.executable,
        "-m",
        "agent.hooks.send",
        "--spool",
        str(spool),
        "--runtime",
        runtime,
        "--session",
        session,
    ]


def claude_settings(command: str) -> dict[str, object]:
    hooks: dict[str, object] = {}
    for event in CLAUDE_EVENTS:
        group: dict[str, object] = {
            "hooks": [{"type": "command", "command": command, "timeout": 10}]
        }
        if event in CLAUDE_MATCHERS:
            group = {"matcher": CLAUDE_MATCHERS[event], **group}
        hooks[event] = [group]
    return {"hooks": hooks}


def user_codex_notify(env: Mapping[str, str]) -> list[str] | None:
    """The user's own `notify` command from the Codex config the session will read."""
    home = env.get("CODEX_HOME") or os.path.join(env.get("HOME", os.path.expanduser("~")), ".codex")
    try:
        notify = tomllib.loads(Path(home, "config.toml").read_text()).get("notify")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if isinstance(notify, list) and notify and all(isinstance(a, str) for a in notify):
        return notify
    return None


def hook_launch_args(
    runtime: str,
    session: str,
    state_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
) -> HookLaunch:
    """The wiring for `runtime` (empty for runtimes without hooks). `env` is the session's
    environment (where the runtime finds its config), used to keep the user's own notify."""
    spool = spool_path(state_dir, session)
    sender = sender_argv(spool, runtime, session, python)
    base_env = {"FLEET_HOOK_SPOOL": str(spool), "FLEET_HOOK_RUNTIME": runtime}
    if runtime == "claude":
        settings = spool_dir(state_dir) / f"{session}.claude-settings.json"
        text = json.dumps(claude_settings(shlex.join(sender)), indent=2)
        return HookLaunch(["--settings", str(settings)], base_env, {settings: text})
    if runtime == "codex":
        theirs = user_codex_notify(env or os.environ)
        if theirs:
            sender = [*sender, "--then", json.dumps(theirs)]
        # A JSON array of strings is a TOML array: `-c` parses its value as TOML.
        return HookLaunch(["-c", f"notify={json.dumps(sender)}"], base_env)
    if runtime == "pi":
        return HookLaunch(["-e", str(PI_EXTENSION)], base_env)
    return HookLaunch()


def runs(runtime: str, command: str | Sequence[str]) -> bool:
    """Whether `command` starts the runtime's own CLI (by the name of its first word)."""
    if isinstance(command, str):
        try:
            words = shlex.split(command)
        except ValueError:
            return False
    else:
        words = list(command)
    return bool(words) and os.path.basename(words[0]) == runtime


def with_args(command: str | Sequence[str], extra: Sequence[str]) -> str | list[str]:
    """`command` with `extra` appended: to the argv, or shell-quoted to the shell string."""
    if not extra:
        return command if isinstance(command, str) else list(command)
    if isinstance(command, str):
        return f"{command} {shlex.join(extra)}"
    return [*command, *extra]


def wire(
    runtime: str,
    session: str,
    state_dir: Path,
    command: str | Sequence[str],
    env: Mapping[str, str],
    run_as: Identity | None = None,
) -> tuple[str | list[str], dict[str, str]]:
    """The launch of one session with its runtime's hooks: (command, env), files written.

    Wired only when the command runs the runtime itself (its first word is named like it:
    `claude`, `/…/.bin/codex`): a wrapper script or another program would get arguments it
    does not know. `env.FLEET_HOOKS = "on"` forces it (a wrapper that passes its arguments
    on), `"off"` turns it off."""
    switch = env.get("FLEET_HOOKS", "").lower()
    if switch in ("off", "0", "no", "false") or (switch != "on" and not runs(runtime, command)):
        return (command if isinstance(command, str) else list(command)), dict(env)
    wiring = hook_launch_args(runtime, session, state_dir, env=env)
    if not wiring.argv:
        return (command if isinstance(command, str) else list(command)), dict(env)
    # Owned by the sessions' user (like the pane logs): their hooks create the spools.
    private_dir(spool_dir(state_dir), run_as)
    wiring.write_files()
    return with_args(command, wiring.argv), {**env, **wiring.env}
