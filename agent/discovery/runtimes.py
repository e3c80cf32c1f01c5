"""Runtime specs as data: how to recognise each agent runtime and read its screen.

One TOML file per runtime (``agent/runtimes/<name>.toml``) ships with the package; an
operator's directory of ``*.toml`` files may replace a built-in (same name, whole file) or
add new runtimes, so supporting another agent CLI needs no code change.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated

import msgspec

__all__ = [
    "SHELL",
    "DetectionRules",
    "Rule",
    "RuntimeSpec",
    "RuntimeSpecError",
    "compile_pattern",
    "load_runtimes",
    "observed_runtime",
]

# The runtime that only counts when nothing more specific runs in the pane.
SHELL = "shell"

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class RuntimeSpecError(ValueError):
    """A runtime spec file that cannot be used; the message names the file."""


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: NonEmpty  # what `fleet explain` shows as the reason for a state
    pattern: NonEmpty  # regex, searched in each line (or in the pane title)
    # Screen rules only: a regex that voids a matching row when any row below it (in the
    # window) matches, e.g. the live input box under what is a prompt in the history and
    # not a dialog. Ignored for title rules.
    unless_below: NonEmpty | None = None


class DetectionRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Screen rules, evaluated blocked > busy > idle; see agent/discovery/detect.py."""

    blocked: list[Rule] = []
    busy: list[Rule] = []
    idle: list[Rule] = []
    title_blocked: list[Rule] = []
    title_busy: list[Rule] = []
    title_idle: list[Rule] = []
    # Only the bottom N non-empty lines of the visible screen are read: what scrolled
    # further up is history, not the current state.
    bottom_lines: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 15
    # A new state must hold this long before it is reported, so redraws don't flap.
    debounce_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.5

    def all_rules(self) -> Iterable[tuple[str, Rule]]:
        for kind in ("blocked", "busy", "idle", "title_blocked", "title_busy", "title_idle"):
            for rule in getattr(self, kind):
                yield kind, rule


class RuntimeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: NonEmpty
    # Regexes on a process's full cmdline (args joined by spaces) that identify this
    # runtime in a pane's process tree.
    process_patterns: list[str]
    interactive: bool = True
    interrupt_key: NonEmpty = "C-c"  # tmux key name sent to cancel a run
    submit_key: NonEmpty = "Enter"
    events_begin: NonEmpty = "<!--FLEET_EVENTS_BEGIN-->"
    events_end: NonEmpty = "<!--FLEET_EVENTS_END-->"
    rules: DetectionRules = DetectionRules()

    def matches(self, cmdline: str) -> bool:
        return any(compile_pattern(p).search(cmdline) for p in self.process_patterns)


@functools.lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compiled once per distinct pattern: detection runs every tick for every session."""
    return re.compile(pattern)


def load_runtimes(extra_dir: Path | None = None) -> dict[str, RuntimeSpec]:
    """Built-in specs, then ``extra_dir/*.toml`` replacing or adding by name."""
    specs: dict[str, RuntimeSpec] = {}
    builtin = resources.files("agent.discovery") / "specs"
    for entry in sorted(builtin.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            spec = _load_one(entry, f"agent/runtimes/{entry.name}")
            specs[spec.name] = spec
    if extra_dir is not None:
        if not extra_dir.is_dir():
            raise RuntimeSpecError(f"{extra_dir}: runtimes directory does not exist")
        for path in sorted(extra_dir.glob("*.toml")):
            spec = _load_one(path, str(path))
            specs[spec.name] = spec
    return specs


def _load_one(entry: Traversable | Path, label: str) -> RuntimeSpec:
    stem = entry.name.removesuffix(".toml")
    try:
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuntimeSpecError(f"{label}: cannot read TOML: {exc}") from None
    data.setdefault("name", stem)
    try:
        spec = msgspec.convert(data, RuntimeSpec)
    except msgspec.ValidationError as exc:
        raise RuntimeSpecError(f"{label}: {exc}") from None
    # The file name is how an operator finds the spec to override; a differing name
    # would make the override silently land somewhere else.
    if spec.name != stem:
        raise RuntimeSpecError(f"{label}: name {spec.name!r} does not match the file name")
    for i, pattern in enumerate(spec.process_patterns):
        _check_regex(label, f"process_patterns[{i}]", pattern)
    for kind, rule in spec.rules.all_rules():
        _check_regex(label, f"rules.{kind} {rule.name!r}", rule.pattern)
        if rule.unless_below is not None:
            _check_regex(label, f"rules.{kind} {rule.name!r} unless_below", rule.unless_below)
    return spec


def _check_regex(label: str, where: str, pattern: str) -> None:
    try:
        compile_pattern(pattern)
    except re.error as exc:
        raise RuntimeSpecError(f"{label}: {where}: bad regex {pattern!r}: {exc}") from None


def observed_runtime(cmdlines: Sequence[str], specs: Mapping[str, RuntimeSpec]) -> str | None:
    """The most specific runtime running in a pane.

    ``cmdlines``: the pane's process tree, root (the pane pid) first, breadth-first. Any
    non-shell runtime matching any process wins, the one nearest the root first (an agent
    spawns shells and tools, not the other way round); "shell" only if the root itself is
    a shell and nothing else matched; None if nothing matches.
    """
    others = [spec for name, spec in specs.items() if name != SHELL]
    for cmdline in cmdlines:
        if not cmdline:
            continue  # zombies and kernel threads have no cmdline
        for spec in others:
            if spec.matches(cmdline):
                return spec.name
    shell = specs.get(SHELL)
    if shell is not None and cmdlines and shell.matches(cmdlines[0]):
        return SHELL
    return None
