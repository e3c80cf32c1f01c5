#!/usr/bin/env bash
# One entry point for a fresh machine: installs what agentfleet needs, then runs it.
#
#   ./dev.sh up [ARGS...]     set up, then `fleet up` (embedded NATS + controller + demo fleet)
#   ./dev.sh test [ARGS...]   set up, then ruff, mypy and the whole test suite (what CI runs)
#   ./dev.sh setup            set up only
#
# Set-up is idempotent: system packages are installed only when missing, the venv (.venv,
# or $AGENTFLEET_VENV) is reused while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${AGENTFLEET_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# tmux runs the sessions; openssh-server and iproute2 give the multi-host tests a second host;
# procps gives ps/kill.
APT_PACKAGES=(tmux openssh-server openssh-client iproute2 procps)

log() { printf '==> %s\n' "$*" >&2; }

install_system_packages() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        log "missing system packages: ${missing[*]} (no apt-get here: install them yourself)"
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "need root or sudo to install: ${missing[*]}"; return 1; }
        sudo=(sudo)
    fi
    log "installing system packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

install_python_env() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        log "agentfleet needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)"
        return 1
    fi
    [ -x "$VENV/bin/python" ] || { log "creating venv $VENV"; "$PYTHON" -m venv "$VENV"; }
    local stamp="$VENV/.agentfleet-installed"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing agentfleet and its test tools into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
        echo "$want" >"$stamp"
    fi
}

# The real agent CLIs the system tests drive (tests/system/test_real_cli.py, docs/runtimes.md),
# pinned, installed into a per-user cache outside the checkout (so a fresh clone reuses it;
# $AGENTFLEET_CLI_DIR overrides) only when missing or when the pinned list changed.
AGENT_CLIS=(
    @anthropic-ai/claude-code@2.1.197
    @openai/codex@0.171.0
    @mariozechner/pi-coding-agent@0.73.1
)
export AGENTFLEET_CLI_DIR="${AGENTFLEET_CLI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentfleet/agent-clis}"
CLI_DIR="$AGENTFLEET_CLI_DIR"

install_agent_clis() {
    if ! command -v npm >/dev/null; then
        log "npm not found: skipping the agent CLIs (${AGENT_CLIS[*]}); their tests will skip"
        return 0
    fi
    local stamp="$CLI_DIR/.agentfleet-clis"
    local want="${AGENT_CLIS[*]}"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
        || [ ! -x "$CLI_DIR/node_modules/.bin/claude" ] \
        || [ ! -x "$CLI_DIR/node_modules/.bin/codex" ] \
        || [ ! -x "$CLI_DIR/node_modules/.bin/pi" ]; then
        log "installing agent CLIs into $CLI_DIR: $want"
        mkdir -p "$CLI_DIR"
        npm install --prefix "$CLI_DIR" --no-audit --no-fund --loglevel=error "${AGENT_CLIS[@]}" \
            >/dev/null
        echo "$want" >"$stamp"
    fi
}

setup() {
    install_system_packages
    install_python_env
    install_agent_clis
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    up)
        setup
        exec "$VENV/bin/fleet" up "$@"
        ;;
    test)
        setup
        log "ruff"
        "$VENV/bin/ruff" check .
        log "mypy"
        "$VENV/bin/mypy"  # what and how strictly: [tool.mypy] in pyproject.toml
        log "pytest"
        # Most of the suite waits on real processes (NATS, daemons, tmux, node CLIs), not on
        # the CPU: three workers fit two cores. One module per worker (--dist loadfile), so a
        # module's nats-server and fleet fixtures are built once. FLEET_TEST_WORKERS=0: serial.
        exec "$VENV/bin/python" -m pytest -n "${FLEET_TEST_WORKERS:-3}" --dist loadfile "$@"
        ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
