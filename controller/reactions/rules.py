"""Reaction rules: TOML, matched against each newly stored event. Pure: no I/O but loading.

```toml
[sinks.ops]
url = "http://127.0.0.1:9000/hook"      # a generic JSON webhook: POST the event

[sinks.phone]                           # other kinds: controller/reactions/sinks.py
kind = "ntfy"                           # ntfy | slack | forgejo | gitea | github | desktop
url = "https://ntfy.sh/my-fleet"

[[rules]]
name = "review-done"
event_type = ["run.completed"]          # globs; empty: any type
session = "coder*"                      # tenant, host, session: globs
text = "tests? pass"                    # regex over the summary
min_severity = "info"
state = ["idle"]                        # the session's state in fleet state; empty: any
action = "notify"                       # or "reply": send `reply` to the session
sink = "ops"
cooldown_s = 300                        # per dedupe key (the event's, else rule+session+type)
```

A `reply` never goes into a blocked dialog unless the rule names the dialog's answer
(`choice`), which is pressed first (as `fleet send --answer`).
"""

from __future__ import annotations

import re
from enum import Enum
from fnmatch import fnmatchcase
from pathlib import Path

import msgspec

from common.config import ConfigError, load_toml
from controller.reactions.sinks import Sink, check
from protocol.events import Event, Severity

SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class Action(str, Enum):
    NOTIFY = "notify"
    REPLY = "reply"


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    action: Action
    event_type: list[str] = []
    tenant: str = "*"
    host: str = "*"
    session: str = "*"
    text: str | None = None
    min_severity: Severity = Severity.DEBUG
    state: list[str] = []
    sink: str | None = None
    reply: str | None = None
    choice: str | None = None  # the answer to press first in a blocked dialog
    cooldown_s: float = 300.0


class ReactionsFile(msgspec.Struct, frozen=True, kw_only=True):
    rules: list[Rule] = []
    sinks: dict[str, Sink] = {}


def _validate(config: ReactionsFile) -> ReactionsFile:
    for name, sink in config.sinks.items():
        check(name, sink)
    names = set()
    for rule in config.rules:
        if rule.name in names:
            raise ConfigError(f"two rules are named {rule.name!r}")
        names.add(rule.name)
        if rule.action is Action.NOTIFY and rule.sink not in config.sinks:
            raise ConfigError(f"rule {rule.name!r}: sink {rule.sink!r} is not in [sinks]")
        if rule.action is Action.REPLY and not rule.reply:
            raise ConfigError(f"rule {rule.name!r}: action reply needs `reply`")
        if rule.text is not None:
            try:
                re.compile(rule.text)
            except re.error as exc:
                raise ConfigError(f"rule {rule.name!r}: text is not a regex: {exc}") from None
    return config


def load(path: Path) -> ReactionsFile:
    return load_toml(path, ReactionsFile, _validate)


def mismatch(rule: Rule, event: Event, session_state: str | None) -> str | None:
    """None when ``rule`` matches ``event``; else the first criterion that failed, as the
    reason category a `reaction.skip` records."""
    if rule.event_type and not any(fnmatchcase(event.event_type, p) for p in rule.event_type):
        return "event_type"
    if not (
        fnmatchcase(event.tenant, rule.tenant)
        and fnmatchcase(event.host, rule.host)
        and fnmatchcase(event.session, rule.session)
    ):
        return "target"
    if SEVERITY_RANK[event.severity] < SEVERITY_RANK[rule.min_severity]:
        return "severity"
    if rule.text is not None and not re.search(rule.text, event.summary):
        return "text"
    if rule.state and session_state not in rule.state:
        return "state"
    return None


def filter_summary(rule: Rule) -> str:
    parts = [f"type={','.join(rule.event_type) or '*'}"]
    target = f"{rule.tenant}/{rule.host}/{rule.session}"
    if target != "*/*/*":
        parts.append(f"target={target}")
    if rule.text:
        parts.append(f"text=/{rule.text}/")
    if rule.min_severity is not Severity.DEBUG:
        parts.append(f"severity>={rule.min_severity.value}")
    if rule.state:
        parts.append(f"state={','.join(rule.state)}")
    return " ".join(parts)
