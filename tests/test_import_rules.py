"""Which package may import which (docs/architecture.md, *Import rules*), read from the source.

The modules are parsed, never imported: the test is fast, needs no NATS or tmux, and an
import hidden behind `if TYPE_CHECKING:` or inside a function counts like any other (a
type-only dependency still ties the packages together).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "common", "agent", "controller")
# Everything of ours, including what the product packages must never need.
OURS = (*PACKAGES, "bench", "tests", "scripts")

# The CLI side of the controller package: the `fleet` commands and `fleet deploy`, which only
# they run. Neither is part of the controller daemon.
CLI = "controller.cli"
CLI_SIDE = (CLI, "controller.deploy")
# Who may import a daemon's life: its own entry point and the CLI (`fleet up` runs both
# daemons in-process, `fleet controller run` the controller).
DAEMON_IMPORTERS = {
    "agent.daemon": ("agent.cli", "agent.__main__", CLI),
    "controller.daemon": (CLI,),
}

# Today's violations, so the test is green now and shrinks as issue 13 lands. Each line is a
# debt: remove it when the import goes; never add one (fix the import instead).
ALLOWED: dict[tuple[str, str], str] = {
    # `fleet deploy` waits for the new host's first heartbeat with a `ps` call through the
    # CLI's API client. The client serves the API, not only the CLI; once it lives beside the
    # API (e.g. with the verb table of issue 13, item 3) this line goes.
    ("controller.deploy.plan", "controller.cli.client"): "deploy waits through the CLI's client",
}


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules() -> dict[str, Path]:
    """Every module of the product packages, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of ours that `name` imports, relative imports resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                up = here[: len(here) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from controller.cli import client` imports the module controller.cli.client.
            targets = [base] + [
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known
            ]
        else:
            continue
        yield from (t for t in targets if within(t, *OURS))


def rule_broken(importer: str, target: str) -> str | None:
    """The rule `importer` breaks by importing `target`, or None."""
    special = (*CLI_SIDE, *DAEMON_IMPORTERS)
    if within(target, importer.split(".")[0]) and not within(target, *special):
        return None  # inside one package, apart from the CLI side and the daemons' lives
    if within(importer, "protocol") and not within(target, "protocol"):
        return "protocol is the wire alone and imports nothing else of ours"
    if within(importer, "common") and not within(target, "protocol", "common"):
        return "common is what both daemons use: it imports protocol only"
    if not within(target, *PACKAGES):
        return "the product never imports bench, tests or scripts"
    if within(importer, "agent") and within(target, "controller"):
        return "the host agent never imports the controller"
    if within(importer, "controller") and not within(importer, *CLI_SIDE):
        if within(target, "agent"):
            return "the controller daemon never imports the host agent"
        if within(target, *CLI_SIDE):
            return "the controller daemon never imports the CLI or deploy"
    if within(target, CLI) and not within(importer, CLI):
        return "only the CLI imports the CLI"
    for daemon, importers in DAEMON_IMPORTERS.items():
        if within(target, daemon) and not within(importer, daemon, *importers):
            return f"only the entry points import {daemon}"
    return None


def violations() -> dict[tuple[str, str], str]:
    found = modules()
    known = set(found)
    broken: dict[tuple[str, str], str] = {}
    for name, path in found.items():
        for target in imported(name, path, known):
            rule = rule_broken(name, target)
            if rule is not None:
                broken[(name, target)] = rule
    return broken


def test_no_new_import_violations() -> None:
    new = {pair: rule for pair, rule in violations().items() if pair not in ALLOWED}
    lines = [f"{a} imports {b}: {rule}" for (a, b), rule in sorted(new.items())]
    assert not lines, "import rules broken (docs/architecture.md):\n" + "\n".join(lines)


def test_allow_list_only_holds_live_violations() -> None:
    # A fixed violation must leave the list, so that it cannot quietly come back.
    live = violations()
    gone = [f"{a} -> {b}" for (a, b) in sorted(ALLOWED) if (a, b) not in live]
    assert not gone, "no longer imported, delete from ALLOWED:\n" + "\n".join(gone)


def test_the_rules_see_the_packages() -> None:
    # Guards the walk itself: a test that parsed nothing would pass for ever.
    found = modules()
    assert {"protocol.codec", "common.natsconn", "agent.daemon", "controller.daemon"} <= set(found)
    pairs = {(a, t) for a, p in found.items() for t in imported(a, p, set(found))}
    assert ("controller.parts", "controller.fleet.state") in pairs
    assert ("controller.cli.up", "agent.daemon") in pairs  # allowed: `fleet up`
    assert rule_broken("protocol.codec", "common.natsconn") is not None
    assert rule_broken("agent.daemon", "controller.config") is not None
    assert rule_broken("controller.fleet.state", "agent.config") is not None
    assert rule_broken("controller.api.service", "controller.cli.client") is not None
    assert rule_broken("controller.fleet.state", "controller.deploy.plan") is not None
    assert rule_broken("controller.cli.up", "agent.daemon") is None
    assert rule_broken("controller.deploy.plan", "controller.deploy.files") is None
