"""`fleet-agent hook` / `python -m agent.hooks.send`: hand one hook payload to the host agent.

A runtime runs this for each hook and (Claude Code) waits for it, so it must never block,
never print (Claude adds a hook's stdout to the model's context) and never fail: it appends one
JSON line to the session's spool file (`O_APPEND`, one `write`, so concurrent hooks do not
interleave) and exits 0, whether or not the agent is running. The agent tails the spool
(agent/hooks/inbox.py). Stdlib only: the import time is the runtime's wait.

    python -m agent.hooks.send --spool FILE --runtime claude --session NAME [PAYLOAD] [--then JSON]

The payload is the last positional argument when given (Codex's `notify` appends its JSON
there), else stdin (Claude Code). `--then` runs the user's own notify command (a JSON argv)
with the same payload, detached, so wiring ours never replaces theirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

MAX_LINE = 60_000  # well under the spool reader's limit; big tool output is cut, not dropped
MAX_FIELD = 2_000
MAX_STDIN = 4 << 20


def _shrink(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD else value[:MAX_FIELD] + "…"
    if isinstance(value, dict):
        if depth > 3:
            return "…"
        return {str(k): _shrink(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_shrink(v, depth + 1) for v in value[:50]] if depth <= 3 else "…"
    return value


def record(runtime: str, session: str, raw: str, now: float) -> bytes:
    """The spool line for one payload (never raises: bad JSON is kept as text)."""
    try:
        payload: Any = json.loads(raw) if raw.strip() else {}
    except ValueError:
        payload = {"raw": raw[:MAX_FIELD]}
    line = json.dumps(
        {"v": 1, "runtime": runtime, "session": session, "at": now, "payload": payload},
        separators=(",", ":"),
        default=str,
    )
    if len(line) > MAX_LINE:
        payload = _shrink(payload)
        line = json.dumps(
            {
                "v": 1,
                "runtime": runtime,
                "session": session,
                "at": now,
                "payload": payload,
                "truncated": True,
            },
            separators=(",", ":"),
            default=str,
        )[: MAX_LINE * 2]
    return (line + "\n").encode()


def parse(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"spool": "", "runtime": "", "session": "", "then": "", "rest": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:] if arg.startswith("--") else ""
        if key in ("spool", "runtime", "session", "then") and i + 1 < len(argv):
            opts[key] = argv[i + 1]
            i += 2
            continue
        opts["rest"].append(arg)
        i += 1
    return opts


def deliver(argv: list[str], stdin: Any = None) -> int:
    """Always 0: a hook that fails would show an error in the runtime or block it."""
    try:
        opts = parse(argv)
        if opts["rest"]:
            raw = opts["rest"][-1]
        else:
            stream = stdin if stdin is not None else sys.stdin
            raw = stream.read(MAX_STDIN) if stream is not None and not stream.isatty() else ""
        spool = opts["spool"] or os.environ.get("FLEET_HOOK_SPOOL", "")
        runtime = opts["runtime"] or os.environ.get("FLEET_HOOK_RUNTIME", "")
        session = opts["session"] or os.environ.get("FLEET_SESSION", "")
        if spool:
            fd = os.open(spool, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, record(runtime, session, raw, time.time()))
            finally:
                os.close(fd)
        if opts["then"]:
            _chain(opts["then"], raw)
    except Exception:  # a hook must never fail the runtime
        pass
    return 0


def _chain(then: str, raw: str) -> None:
    argv = json.loads(then)
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        subprocess.Popen(  # the user's own notify command, from their config
            [*argv, raw],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


if __name__ == "__main__":
    sys.exit(deliver(sys.argv[1:]))
