"""Per-session HOME and config for the real agent CLIs, pointed at a model endpoint.

`seed(runtime, root, cwd, base_url)` writes everything a runtime reads at start under `root`
(a fresh directory per session) and returns a `Launch`: the environment to run it with and its
argv. Seeded this way none of them shows an onboarding, login, API-key, trust or update dialog:

- claude: `CLAUDE_CONFIG_DIR=<root>/claude` with `.claude.json` (`hasCompletedOnboarding`,
  the key's last 20 characters in `customApiKeyResponses.approved`, `cwd` trusted under
  `projects`), `ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY`, auto-updater and non-essential traffic
  off. `trust=False` leaves the folder untrusted, so the "Quick safety check" dialog shows.
- codex: `CODEX_HOME=<root>/codex` with `config.toml`: a `[model_providers.fake]` on the
  Responses wire API whose key comes from `FAKE_MODEL_API_KEY`, `cwd` trusted, update check
  and analytics off, and `--no-daemon` (else codex 0.171 starts a background app-server
  daemon under CODEX_HOME that outlives the TUI); `approval_policy = "on-request"`: a tool
  call that asks for escalation needs approval.
- pi: `PI_CODING_AGENT_DIR=<root>/pi` with `models.json` (a `fake` provider on the
  `anthropic-messages` API) and `settings.json` (default provider/model), `PI_OFFLINE=1`.

`HOME` is `<root>/home` for every runtime, so nothing reads or writes the operator's own
dotfiles. The same seeding with a real key and the real base URL runs the real service
(docs/runtimes.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FAKE_KEY = "sk-ant-fake-00000000000000000000-agentfleet-tests"
MODEL = "fake-model"
CLAUDE_VERSION = "2.1.197"

RUNTIMES = ("claude", "codex", "pi")


@dataclass
class Launch:
    runtime: str
    argv: list[str]
    env: dict[str, str]  # the whole environment for the process (not a delta)
    home: Path
    config_dir: Path
    cwd: Path
    notes: list[str] = field(default_factory=list)


def base_env(home: Path, path: str | None = None) -> dict[str, str]:
    """A minimal clean environment: no inherited provider keys or configs."""
    env = {
        "HOME": str(home),
        "PATH": path or os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "SHELL": "/bin/bash",
        "USER": os.environ.get("USER", "agentfleet"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        # A private TMPDIR: codex refuses to create its helper binaries when CODEX_HOME lies
        # under the temporary directory (pytest's tmp_path is under /tmp).
        "TMPDIR": str(home / ".tmp"),
        "NO_UPDATE_NOTIFIER": "1",
        "DO_NOT_TRACK": "1",
    }
    (home / ".tmp").mkdir(parents=True, exist_ok=True)
    return env


def seed_claude(
    root: Path,
    cwd: Path,
    base_url: str,
    *,
    binary: str = "claude",
    api_key: str = FAKE_KEY,
    trust: bool = True,
    approve_key: bool = True,
    model: str | None = MODEL,
    extra_args: list[str] | None = None,
) -> Launch:
    """`trust=False`: the folder-trust dialog shows at start; `approve_key=False`: the
    "Detected a custom API key" dialog shows."""
    home = root / "home"
    config = root / "claude"
    home.mkdir(parents=True, exist_ok=True)
    config.mkdir(parents=True, exist_ok=True)
    project: dict[str, object] = {
        "allowedTools": [],
        "hasTrustDialogAccepted": trust,
        "hasCompletedProjectOnboarding": True,
        "projectOnboardingSeenCount": 1,
        "hasClaudeMdExternalIncludesApproved": False,
        "hasClaudeMdExternalIncludesWarningShown": False,
    }
    state = {
        "numStartups": 1,
        "installMethod": "npm",
        "autoUpdates": False,
        "theme": "dark",
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": CLAUDE_VERSION,
        "lastReleaseNotesSeen": CLAUDE_VERSION,
        "hasSeenTasksHint": True,
        "hasShownOpus45Notice": {},
        "bypassPermissionsModeAccepted": False,
        "customApiKeyResponses": {
            "approved": [api_key[-20:]] if approve_key else [],
            "rejected": [],
        },
        "projects": {str(cwd): project},
    }
    (config / ".claude.json").write_text(json.dumps(state, indent=2))
    (config / "settings.json").write_text(
        json.dumps(
            {
                "autoUpdates": False,
                "includeCoAuthoredBy": False,
                "spinnerTipsEnabled": False,
            },
            indent=2,
        )
    )
    env = base_env(home)
    env.update(
        {
            "CLAUDE_CONFIG_DIR": str(config),
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": api_key,
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_BUG_COMMAND": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "0",
            "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
            "DISABLE_INSTALLATION_CHECKS": "1",
        }
    )
    if model:
        env["ANTHROPIC_MODEL"] = model
        env["ANTHROPIC_SMALL_FAST_MODEL"] = model
        env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] = model
    return Launch("claude", [binary, *(extra_args or [])], env, home, config, cwd)


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def seed_codex(
    root: Path,
    cwd: Path,
    base_url: str,
    *,
    binary: str = "codex",
    api_key: str = FAKE_KEY,
    trust: bool = True,
    model: str = MODEL,
    approval_policy: str = "on-request",
    sandbox_mode: str = "workspace-write",
    daemon: bool = False,
    extra_args: list[str] | None = None,
) -> Launch:
    """`base_url` is the OpenAI-style URL, with /v1 (FakeModel.openai_url).

    `daemon=True` runs codex as users do by default: the TUI attaches to a background
    app-server daemon (started on demand, it outlives the TUI: stop it with
    `stop_codex_daemon`); Ctrl-C while working then opens the "Task is still running" menu.
    Without it (`--no-daemon`) Ctrl-C interrupts at once."""
    home = root / "home"
    config = root / "codex"
    home.mkdir(parents=True, exist_ok=True)
    config.mkdir(parents=True, exist_ok=True)
    lines = [
        f"model = {_toml_str(model)}",
        'model_provider = "fake"',
        f"approval_policy = {_toml_str(approval_policy)}",
        f"sandbox_mode = {_toml_str(sandbox_mode)}",
        "check_for_update_on_startup = false",
        'cli_auth_credentials_store = "file"',
        "",
        "[analytics]",
        "enabled = false",
        "",
        "[feedback]",
        "enabled = false",
        "",
        "[notice]",
        "hide_full_access_warning = true",
        "hide_rate_limit_model_nudge = true",
        "",
        "[tui]",
        "show_tooltips = false",
        "",
        "[model_providers.fake]",
        'name = "Fake model"',
        f"base_url = {_toml_str(base_url)}",
        'env_key = "FAKE_MODEL_API_KEY"',
        'wire_api = "responses"',
        "request_max_retries = 0",
        "stream_max_retries = 0",
        "stream_idle_timeout_ms = 300000",
        "",
    ]
    if trust:
        lines += [f"[projects.{_toml_str(str(cwd))}]", 'trust_level = "trusted"', ""]
    (config / "config.toml").write_text("\n".join(lines))
    env = base_env(home)
    env.update(
        {
            "CODEX_HOME": str(config),
            "FAKE_MODEL_API_KEY": api_key,
            "CODEX_DISABLE_UPDATE_CHECK": "1",
            "RUST_LOG": "error",
        }
    )
    argv = [binary, *([] if daemon else ["--no-daemon"]), *(extra_args or [])]
    return Launch("codex", argv, env, home, config, cwd)


def stop_codex_daemon(launch: Launch, timeout: float = 20.0) -> None:
    """Stop the app-server daemon a `daemon=True` codex started under its CODEX_HOME, and its
    updater loop (which `daemon stop` leaves running): only processes whose executable lies
    under this session's CODEX_HOME, found through the daemon's own pid files."""
    import signal
    import subprocess

    subprocess.run(
        [launch.argv[0], "app-server", "daemon", "stop"],
        env=launch.env,
        cwd=launch.cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    home = str(launch.config_dir)
    for pidfile in (launch.config_dir / "app-server-daemon").glob("*.pid"):
        try:
            pid = int(json.loads(pidfile.read_text())["pid"])
            exe = os.readlink(f"/proc/{pid}/exe")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if exe.startswith(home + "/"):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def seed_pi(
    root: Path,
    cwd: Path,
    base_url: str,
    *,
    binary: str = "pi",
    api_key: str = FAKE_KEY,
    model: str = MODEL,
    api: str = "anthropic-messages",
    extra_args: list[str] | None = None,
) -> Launch:
    """`api` is pi's provider API: "anthropic-messages" (base URL without /v1) or
    "openai-completions" (base URL with /v1)."""
    home = root / "home"
    config = root / "pi"
    home.mkdir(parents=True, exist_ok=True)
    config.mkdir(parents=True, exist_ok=True)
    url = base_url.rstrip("/")
    if api == "openai-completions" and not url.endswith("/v1"):
        url += "/v1"
    if api == "anthropic-messages" and url.endswith("/v1"):
        url = url[: -len("/v1")]
    models = {
        "providers": {
            "fake": {
                "baseUrl": url,
                "api": api,
                "apiKey": "FAKE_MODEL_API_KEY",  # names an env var (pi resolves it)
                "models": [
                    {
                        "id": model,
                        "name": "Fake model",
                        "reasoning": False,
                        "input": ["text"],
                        "contextWindow": 200000,
                        "maxTokens": 8192,
                        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                    }
                ],
            }
        }
    }
    (config / "models.json").write_text(json.dumps(models, indent=2))
    (config / "settings.json").write_text(
        json.dumps(
            {
                "defaultProvider": "fake",
                "defaultModel": model,
                "defaultThinkingLevel": "off",
                "quietStartup": True,
                "collapseChangelog": True,
                "enableInstallTelemetry": False,
                "lastChangelogVersion": "999.0.0",
            },
            indent=2,
        )
    )
    env = base_env(home)
    env.update(
        {
            "PI_CODING_AGENT_DIR": str(config),
            "FAKE_MODEL_API_KEY": api_key,
            "PI_OFFLINE": "1",
            "PI_SKIP_VERSION_CHECK": "1",
            "PI_TELEMETRY": "0",
        }
    )
    return Launch("pi", [binary, *(extra_args or [])], env, home, config, cwd)


def seed(
    runtime: str, root: Path, cwd: Path, model_url: str, *, binary: str | None = None, **kw: object
) -> Launch:
    """Seed `runtime` under `root`. `model_url` is the fake model's base URL without a path
    (FakeModel.url); each runtime gets the form it wants."""
    root.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    url = model_url.rstrip("/")
    if runtime == "claude":
        return seed_claude(root, cwd, url, binary=binary or "claude", **kw)  # type: ignore[arg-type]
    if runtime == "codex":
        return seed_codex(root, cwd, url + "/v1", binary=binary or "codex", **kw)  # type: ignore[arg-type]
    if runtime == "pi":
        return seed_pi(root, cwd, url, binary=binary or "pi", **kw)  # type: ignore[arg-type]
    raise ValueError(f"unknown runtime {runtime!r}")
