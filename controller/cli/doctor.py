"""`fleet doctor`: one command that says what is wrong with the fleet on this machine and the
command that fixes it. The local checks are here (tmux, nats-server, the rosters' tmux
sockets, boot units, credential files); what the controller knows (agents' heartbeats,
flagged sessions, clocks) is controller/cli/doctor_fleet.py.

Read-only: it runs `tmux -V`, `tmux list-sessions`, `nats-server --version`,
`systemctl is-enabled` and API reads, and changes nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from agent.config import AgentConfig, ConfigError, load
from controller.cli.common import JsonOpt, NatsOpt, fail, print_json
from controller.cli.discover import socket_dir
from controller.cli.doctor_fleet import Finding, Installed, check_secret, fleet_findings, problem
from controller.cli.install import Manifest
from controller.cli.install_units import LINGER_DIR, layout
from controller.cli.upplan import default_roster
from controller.natsserver.embedded import EmbeddedNatsError, nats_server_binary

TMUX_MIN = (3, 0)  # `new-session -e`, which every launch uses
PROBE_TIMEOUT_S = 5.0  # a hung tmux server or systemctl is a finding, not a hang
_ENABLED = {"enabled", "enabled-runtime", "static", "indirect", "generated", "alias"}


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        return 127, f"{argv[0]} not found"
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {PROBE_TIMEOUT_S:.0f}s"
    return done.returncode, (done.stdout.strip() or done.stderr.strip())


def check_tmux() -> list[Finding]:
    if shutil.which("tmux") is None:
        return [problem("tmux", "tmux is not on PATH", "apt-get install tmux")]
    code, out = _run(["tmux", "-V"])
    found = re.search(r"(\d+)\.(\d+)", out)
    if code != 0 or found is None:
        return [problem("tmux", f"`tmux -V` failed: {out}", "reinstall tmux")]
    if (int(found[1]), int(found[2])) < TMUX_MIN:
        need = ".".join(map(str, TMUX_MIN))
        return [problem("tmux", f"{out} is older than {need}", f"install tmux >= {need}")]
    return [Finding("tmux", "ok", out)]


def check_nats_binary() -> list[Finding]:
    try:
        binary = nats_server_binary()
    except EmbeddedNatsError as exc:
        return [problem("nats-server", str(exc).split(";")[0], "./dev.sh setup")]
    code, out = _run([str(binary), "--version"])
    if code != 0:
        return [problem("nats-server", f"{binary} --version failed: {out}", "./dev.sh setup")]
    return [Finding("nats-server", "ok", f"{out} ({binary})")]


def roster_findings(path: Path, cfg: AgentConfig, installed: Installed) -> list[Finding]:
    unit = f"fleet-agent@{cfg.tenant}.service"
    start = (
        f"{installed[unit]} restart {unit}" if unit in installed else f"fleet up --config {path}"
    )
    sock = cfg.socket_name
    where = f"tmux socket {sock} (roster {path}, tenant {cfg.tenant})"
    # A server killed without cleaning up leaves its socket file: only an answer counts.
    code, text = _run(["tmux", "-L", sock, "list-sessions", "-F", "#{session_name}"])
    if not (socket_dir() / sock).exists() or code != 0:
        out = [problem("tmux", f"{where} is missing: no tmux server answers on it", start)]
    else:
        out = [Finding("tmux", "ok", f"{where}: {len(text.split())} session(s)")]
    rewrite = f"fleet up --config {path} (it writes the fleet's credentials)"
    for secret in (cfg.nats.nkey_seed, cfg.nats.credentials):
        if secret:
            out += check_secret(Path(secret).expanduser(), f"roster {path}: key", rewrite)
    return out


def load_rosters(paths: list[Path]) -> tuple[list[tuple[Path, AgentConfig]], list[Finding]]:
    rosters, out = [], []
    for path in paths:
        try:
            rosters.append((path, load(path)))
        except ConfigError as exc:
            fix = f"edit {path}, or rewrite it: fleet init --force"
            out.append(problem("roster", str(exc).split("\n")[0], fix))
    return rosters, out


def read_manifests() -> list[tuple[bool, Manifest]]:
    found = []
    for system in (False, True):
        path = layout(system, Path("/")).manifest
        try:
            found.append((system, msgspec.json.decode(path.read_bytes(), type=Manifest)))
        except (OSError, msgspec.DecodeError):
            continue  # none there (or unreadable): nothing installed that we can check
    return found


def _ctl(system: bool) -> str:
    return "systemctl" if system else "systemctl --user"


def check_boot(manifests: list[tuple[bool, Manifest]]) -> list[Finding]:
    if not manifests:
        text = "no `fleet install` units: this fleet does not come back after a reboot"
        return [Finding("boot", "note", text, "fleet install")]
    out = []
    for system, manifest in manifests:
        ctl = _ctl(system).split()
        for unit in manifest.units:
            code, answer = _run([*ctl, "is-enabled", unit])
            if answer in _ENABLED:
                out.append(Finding("boot", "ok", f"{unit} is {answer}"))
                continue
            text = f"{unit} would not start at boot (is-enabled: {answer or code})"
            out.append(problem("boot", text, " ".join([*ctl, "enable", unit])))
        user = manifest.linger
        if user and not (LINGER_DIR / user).exists():
            text = f"lingering is off for {user}: the user units start at login, not at boot"
            out.append(problem("boot", text, f"loginctl enable-linger {user}"))
        data = Path(manifest.data)
        configs = [data / "controller.toml", data / "nats" / "nats-server.conf"]
        configs += sorted(data.glob("agent-*/agent.toml"))
        for config in configs:
            out += check_secret(config, "installed config", "fleet install")
    return out


def render(findings: list[Finding]) -> None:
    for f in findings:
        label = {"ok": "ok     ", "note": "note   ", "problem": "PROBLEM"}[f.level]
        fix = f"  -> fix: {f.fix}" if f.fix and f.level != "ok" else ""
        # Plain writes: one line per finding, never wrapped to the terminal width.
        print(f"{label} {f.check}: {f.message}{fix}")
    bad = sum(f.level == "problem" for f in findings)
    print(f"fleet doctor: {bad} problem(s)" if bad else "fleet doctor: healthy")


def doctor(
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config", "-c", help="roster(s) to check (default: the one `fleet init` wrote)"
        ),
    ] = None,
    json_out: JsonOpt = False,
    nats_url: NatsOpt = None,
) -> None:
    """Check tmux, nats-server, the controller, each agent's heartbeat, boot units, clocks and
    credentials; print what is wrong and the command that fixes it (exit 1 if anything is)."""
    for path in config or []:
        if not path.is_file():
            fail(f"no roster at {path}")
    paths = config or ([default_roster()] if default_roster().is_file() else [])
    rosters, findings = load_rosters(paths)
    manifests = read_manifests()
    installed = {u: _ctl(system) for system, m in manifests for u in m.units}
    findings += check_tmux() + check_nats_binary()
    for path, cfg in rosters:
        findings += roster_findings(path, cfg, installed)
    findings += fleet_findings(nats_url, {c.tenant: (p, c) for p, c in rosters}, installed)
    findings += check_boot(manifests)
    healthy = not any(f.level == "problem" for f in findings)
    if json_out:
        print_json({"healthy": healthy, "findings": findings})
    else:
        render(findings)
    raise typer.Exit(0 if healthy else 1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
