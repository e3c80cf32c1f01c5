#!/usr/bin/env python3
"""Record the raw `pipe-pane` bytes of each real agent CLI printing emission blocks, for the
emission-parser tests (tests/agent/test_capture.py).

    .venv/bin/python scripts/record_emission.py [claude codex pi] [--out tests/fixtures/emission]

Each runtime (installed by `./dev.sh setup`) runs in a private tmux server (120x40) against
the fake model (tests/support/fake_model.py). Once it is idle, `tmux pipe-pane` starts
appending the pane's output to a file (as the host agent does for a session it finds already
running), and three prompts are answered with text holding an emission block:

- `short`: one event on one line (marker `short-<runtime>-e1`);
- `long`: one event whose summary is longer than the pane is wide, so the TUI wraps it
  (marker `long-<runtime>-e2`);
- `broken`: a block whose JSON is cut short (marker `broken-<runtime>-e3`): one
  `validation_error`.

Saved: `<runtime>-session.bytes` (the raw stream), `<runtime>-session.txt` (the final
`capture-pane -p -S -` scrollback, for a human to compare) and `<runtime>-session.json`
(pane size and the markers). Every step waits, with a deadline, for what the screen shows.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import realcli  # noqa: E402
from tests.support.fake_model import FakeModel, Script, text  # noqa: E402

BEGIN = "<!--FLEET_EVENTS_BEGIN-->"
END = "<!--FLEET_EVENTS_END-->"


def markers(runtime: str) -> dict[str, str]:
    return {k: f"{k}-{runtime}-e{i}" for i, k in enumerate(("short", "long", "broken"), 1)}


def answers(runtime: str) -> dict[str, str]:
    """The model's answer per prompt word: prose, then a block."""
    m = markers(runtime)
    short = json.dumps({"event_type": "tool_call", "summary": m["short"], "confidence": 0.9})
    words = " ".join(f"w{i:02d}" for i in range(60))  # ~240 characters: wider than the pane
    long = json.dumps({"event_type": "run.completed", "summary": f"{m['long']} {words} end"})
    broken = '{"event_type": "tool_call", "summary": "' + m["broken"] + '", "tags": ["x"'
    blocks = {"short": short, "long": long, "broken": broken}
    return {
        k: f"Here is the block for {k}:\n\n{BEGIN}\n{body}\n{END}\n\nThat was it."
        for k, body in blocks.items()
    }


def record(runtime: str, out: Path, work: Path) -> None:
    binary = realcli.cli_path(runtime)
    if binary is None:
        print(f"{runtime}: not installed in {realcli.cli_bin_dir()} (./dev.sh setup)")
        return
    signs = realcli.SIGNS[runtime]
    script = Script()
    for key, answer in answers(runtime).items():
        script.on(f"emit-{key}", text(answer))
    raw = out / f"{runtime}-session.bytes"
    raw.unlink(missing_ok=True)
    with FakeModel(script) as model, realcli.Tmux(f"emit-{runtime}") as tmux:
        pane, _ = realcli.start_runtime(tmux, runtime, work / runtime, model.url, binary=binary)
        pane.wait_for(signs.is_idle, 30, what="idle")
        tmux.run("pipe-pane", "-t", pane.target, f"exec cat >> {shlex.quote(str(raw))}")
        for key, marker in markers(runtime).items():
            realcli.submit(pane, f"please emit-{key} now")
            model.wait_for_prompt(f"emit-{key}", 15)
            pane.wait_for(
                lambda s, t, m=marker: m in s and "That was it." in s and signs.is_idle(s, t),
                20,
                what=f"the {key} block, then idle",
            )
            print(f"  {runtime}: {key} shown")
        tmux.run("pipe-pane", "-t", pane.target)  # close the pipe: the file is complete
        scrollback = tmux.run("capture-pane", "-p", "-J", "-S", "-", "-t", pane.target).stdout
    (out / f"{runtime}-session.txt").write_text(scrollback)
    meta = {"width": tmux.width, "height": tmux.height, "markers": markers(runtime)}
    (out / f"{runtime}-session.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{runtime}: {raw.stat().st_size} bytes -> {raw}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runtimes", nargs="*", default=["claude", "codex", "pi"])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "emission")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="af-emit-") as work:
        for runtime in args.runtimes:
            record(runtime, args.out.resolve(), Path(work))


if __name__ == "__main__":
    main()
