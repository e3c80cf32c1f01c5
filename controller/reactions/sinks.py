"""Notification sinks: where a reaction (or the weekly evidence digest) is delivered.

One ``Sink`` config, its ``kind`` picking the request shape:

- ``webhook``: POST the message's JSON data to ``url`` (the generic sink);
- ``ntfy``: POST the plain text to the topic ``url``, with Title/Priority/Tags headers;
- ``slack``: POST ``{"text": ...}`` to a Slack-compatible incoming-webhook ``url``;
- ``forgejo``, ``gitea``, ``github``: a comment on issue ``issue`` of ``repo`` (owner/name),
  ``POST {url}/repos/{owner}/{name}/issues/{n}/comments`` with ``{"body": markdown}``; ``url``
  is the API root (``https://codeberg.org/api/v1``; GitHub's is the default). The token is
  read from ``token_file`` at each delivery, sent only in the Authorization header and
  never logged, counted or put into an event: outcomes carry the HTTP status alone;
- ``desktop``: ``notify-send`` where it is installed; skipped, silently, where it is not.

Delivery retries a 5xx, a 408/429 or an unreachable sink with doubling backoff from 0.5 s
(``retries`` attempts after the first); any other status is final at once (a 401 does not
heal). Stdlib HTTP (urllib, in a worker thread): no client dependency for a POST a minute.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec

from common.config import ConfigError

GITHUB_API: Final = "https://api.github.com"
FIRST_BACKOFF_S: Final = 0.5
COMMENT_MAX_CHARS: Final = 60_000  # GitHub refuses comments over 65,536 characters


class SinkKind(str, Enum):
    WEBHOOK = "webhook"
    NTFY = "ntfy"
    SLACK = "slack"
    FORGEJO = "forgejo"
    GITEA = "gitea"
    GITHUB = "github"
    DESKTOP = "desktop"


FORGES: Final = frozenset({SinkKind.FORGEJO, SinkKind.GITEA, SinkKind.GITHUB})


class Sink(msgspec.Struct, frozen=True, kw_only=True):
    kind: SinkKind = SinkKind.WEBHOOK
    url: str = ""
    headers: dict[str, str] = {}
    timeout_s: float = 5.0
    retries: int = 3  # attempts after the first, with doubling backoff from 0.5 s
    priority: str = ""  # ntfy: min|low|default|high|urgent; empty: from the severity
    tags: list[str] = []  # ntfy
    repo: str = ""  # forges: owner/name
    issue: int = 0  # forges: the issue (or pull request) number
    token_file: str = ""  # forges: a file holding the token, nothing else


def check(name: str, sink: Sink) -> None:
    """A one-line ConfigError for a sink that could never deliver."""
    if sink.kind in FORGES:
        owner, _, repo = sink.repo.partition("/")
        if not owner or not repo or "/" in repo:
            raise ConfigError(f"sink {name!r}: repo must be owner/name, not {sink.repo!r}")
        if sink.issue < 1:
            raise ConfigError(f"sink {name!r}: issue must be an issue number")
        if not sink.token_file:
            raise ConfigError(f"sink {name!r}: a {sink.kind.value} sink needs token_file")
        if sink.kind is not SinkKind.GITHUB and not sink.url:
            raise ConfigError(f"sink {name!r}: url must be the forge's API root (…/api/v1)")
    elif sink.kind is not SinkKind.DESKTOP and not sink.url.startswith(("http://", "https://")):
        raise ConfigError(f"sink {name!r}: url must be http(s)://, not {sink.url!r}")
    if not 0 <= sink.retries <= 10:
        raise ConfigError(f"sink {name!r}: retries must be 0-10")


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    text: str  # plain text (ntfy, Slack, desktop) and Markdown (issue comments)
    data: dict[str, Any] = field(default_factory=dict)  # the generic webhook's body
    priority: str = "default"  # ntfy's scale: min, low, default, high, urgent


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    attempts: int
    detail: str  # "HTTP 201", "unreachable", "skipped: ...": never a header or a token

    @property
    def outcome(self) -> str:
        return (
            "skipped"
            if self.detail.startswith("skipped")
            else ("delivered" if self.ok else "failed")
        )


class SinkError(Exception):
    """The sink cannot be tried at all (its token file is unreadable); not retried."""


def read_token(path: str) -> str:
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise SinkError(f"token_file {path}: {exc.strerror or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise SinkError(f"token_file {path}: must hold one token and nothing else")
    return token


def _header_text(value: str) -> str:
    # http.client sends headers as Latin-1; ntfy reads RFC 2047 for anything else.
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "=?UTF-8?B?" + base64.b64encode(value.encode()).decode() + "?="
    return value


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    headers: dict[str, str]
    body: bytes


def build(sink: Sink, msg: Message) -> Request:
    """The HTTP request for ``msg`` (any kind but desktop). Reads the token of a forge."""
    if sink.kind is SinkKind.NTFY:
        headers = {"Content-Type": "text/plain; charset=utf-8", "Title": _header_text(msg.title)}
        headers["Priority"] = sink.priority or msg.priority
        if sink.tags:
            headers["Tags"] = ",".join(sink.tags)
        return Request(sink.url, {**headers, **sink.headers}, msg.text.encode())
    if sink.kind is SinkKind.SLACK:
        body = {"text": f"*{msg.title}*\n{msg.text}"}
        return Request(sink.url, {"Content-Type": "application/json", **sink.headers}, _json(body))
    if sink.kind in FORGES:
        token = read_token(sink.token_file)
        if sink.kind is SinkKind.GITHUB:
            auth = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
        else:  # Forgejo and Gitea share Gitea's API
            auth = {"Authorization": f"token {token}", "Accept": "application/json"}
        root = (sink.url or GITHUB_API).rstrip("/")
        text = msg.text
        if len(text) > COMMENT_MAX_CHARS:
            text = text[:COMMENT_MAX_CHARS] + "\n\n(cut: the comment limit)\n"
        return Request(
            f"{root}/repos/{sink.repo}/issues/{sink.issue}/comments",
            {"Content-Type": "application/json", **sink.headers, **auth},
            _json({"body": text}),
        )
    return Request(
        sink.url, {"Content-Type": "application/json", **sink.headers}, _json(msg.data or {})
    )


def _json(body: Any) -> bytes:
    return json.dumps(body, default=str).encode()


def _post(req: Request, timeout_s: float) -> int:
    """One POST; the HTTP status (an HTTPError's too)."""
    http = urllib.request.Request(req.url, data=req.body, method="POST", headers=req.headers)
    try:
        with urllib.request.urlopen(http, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


URGENCY: Final = {"min": "low", "low": "low", "high": "critical", "urgent": "critical"}


def _notify_send(msg: Message, timeout_s: float) -> Outcome:
    exe = shutil.which("notify-send")
    if exe is None:
        return Outcome(True, 0, "skipped: notify-send is not installed")
    argv = [exe, "-a", "agentfleet", "-u", URGENCY.get(msg.priority, "normal"), "--"]
    done = subprocess.run(
        [*argv, msg.title, msg.text[:1000]],
        capture_output=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Outcome(done.returncode == 0, 1, f"notify-send exit {done.returncode}")


def retryable(status: int) -> bool:
    return status == 0 or status >= 500 or status in (408, 429)


async def deliver(
    sink: Sink, msg: Message, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
) -> Outcome:
    """Deliver ``msg``, retrying as the module docstring says; never raises for the sink's
    own failures (an unreadable token file is a failed outcome, not retried)."""
    if sink.kind is SinkKind.DESKTOP:
        try:
            return await anyio.to_thread.run_sync(_notify_send, msg, sink.timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            return Outcome(False, 1, f"notify-send: {type(exc).__name__}")
    try:
        req = build(sink, msg)
    except SinkError as exc:
        return Outcome(False, 0, str(exc))
    status, delay, attempts = 0, FIRST_BACKOFF_S, 0
    for attempt in range(sink.retries + 1):
        attempts += 1
        try:
            status = await anyio.to_thread.run_sync(_post, req, sink.timeout_s)
        except (OSError, ValueError, http.client.HTTPException):  # refused, timed out, garbled
            status = 0
        if 200 <= status < 300 or not retryable(status) or attempt == sink.retries:
            break
        await sleep(delay)
        delay *= 2
    detail = f"HTTP {status}" if status else "unreachable"
    return Outcome(200 <= status < 300, attempts, detail)


class Deliveries:
    """``deliver`` with its counters: ``<prefix>_retries``, ``_delivered``, ``_failed`` and
    ``_dead_letter`` (a message given up on) in the controller's counters."""

    def __init__(
        self,
        counters: dict[str, int],
        prefix: str,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.counters = counters
        self.prefix = prefix
        self.sleep = sleep

    def count(self, name: str, n: int = 1) -> None:
        key = f"{self.prefix}_{name}"
        self.counters[key] = self.counters.get(key, 0) + n

    def dead_letter(self) -> None:
        self.count("dead_letter")

    async def send(self, sink: Sink, msg: Message) -> Outcome:
        out = await deliver(sink, msg, self.sleep)
        if out.attempts > 1:
            self.count("retries", out.attempts - 1)
        if out.outcome == "skipped":
            self.count("skipped")
        elif out.ok:
            self.count("delivered")
        else:
            self.count("failed")
            self.dead_letter()
        return out
