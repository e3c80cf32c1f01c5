"""Notification sinks against a local HTTP receiver (the one stand-in: for ntfy, Slack and the
forges): each kind's request shape (method, path, headers, body), the forges' auth header
shapes, a 500 retried with doubling backoff then dead-lettered and counted, a 401 not
retried, an unreadable token file failing without a request, and `notify-send` run where
it is installed and skipped where it is not."""

from __future__ import annotations

import json
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from common.config import ConfigError
from controller.reactions.rules import ReactionsFile, _validate
from controller.reactions.sinks import Deliveries, Message, Sink, SinkKind, check, deliver

TOKEN = "tok-5f3a9c1e-never-shown"


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Answers 500 under /fail, 401 under /denied, 201 under /repos or /api, else 200."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.hits.append(Hit("POST", self.path, dict(self.headers.items()), body))
                code = 200
                if self.path.startswith("/fail"):
                    code = 500
                elif self.path.startswith("/denied"):
                    code = 401
                elif self.path.startswith(("/repos", "/api")):
                    code = 201
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "forge.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


MSG = Message(
    title="done: run.completed on acme/h1/coder",
    text="tests pass\n\n**info** · acme/h1/coder",
    data={"rule": "done", "event": {"event_type": "run.completed"}},
    priority="high",
)


def send(sink: Sink) -> Any:
    return anyio.run(deliver, sink, MSG)


def test_each_sink_posts_its_own_request_shape(receiver: Receiver, token_file: Path) -> None:
    url = receiver.url
    sinks = {
        "webhook": Sink(url=f"{url}/hook", headers={"X-Fleet": "1"}),
        "ntfy": Sink(kind=SinkKind.NTFY, url=f"{url}/fleet-topic", tags=["robot", "fleet"]),
        "slack": Sink(kind=SinkKind.SLACK, url=f"{url}/services/T0/B0/x"),
        "forgejo": Sink(
            kind=SinkKind.FORGEJO,
            url=f"{url}/api/v1",
            repo="ops/inbox",
            issue=7,
            token_file=str(token_file),
        ),
        "github": Sink(
            kind=SinkKind.GITHUB, url=url, repo="ops/inbox", issue=8, token_file=str(token_file)
        ),
    }
    outcomes = {name: send(sink) for name, sink in sinks.items()}
    assert {n: (o.ok, o.attempts, o.outcome) for n, o in outcomes.items()} == {
        n: (True, 1, "delivered") for n in sinks
    }
    assert outcomes["github"].detail == "HTTP 201" and outcomes["webhook"].detail == "HTTP 200"
    hook, ntfy, slack, forgejo, github = receiver.hits
    assert all(h.method == "POST" for h in receiver.hits)

    assert hook.path == "/hook" and hook.headers["Content-Type"] == "application/json"
    assert hook.headers["X-Fleet"] == "1" and hook.json() == MSG.data

    assert ntfy.path == "/fleet-topic" and ntfy.body.decode() == MSG.text
    assert ntfy.headers["Title"] == MSG.title and ntfy.headers["Priority"] == "high"
    assert ntfy.headers["Tags"] == "robot,fleet"
    assert ntfy.headers["Content-Type"].startswith("text/plain")

    assert slack.path == "/services/T0/B0/x"
    assert slack.json() == {"text": f"*{MSG.title}*\n{MSG.text}"}

    # Forgejo (and Gitea): `token`; GitHub: `Bearer` and its media type. Same path and body.
    assert forgejo.path == "/api/v1/repos/ops/inbox/issues/7/comments"
    assert forgejo.headers["Authorization"] == f"token {TOKEN}"
    assert forgejo.headers["Accept"] == "application/json"
    assert github.path == "/repos/ops/inbox/issues/8/comments"
    assert github.headers["Authorization"] == f"Bearer {TOKEN}"
    assert github.headers["Accept"] == "application/vnd.github+json"
    assert forgejo.json() == github.json() == {"body": MSG.text}
    # The token goes in the forges' Authorization header and nowhere else.
    for hit in receiver.hits:
        others = {k: v for k, v in hit.headers.items() if k != "Authorization"}
        assert TOKEN not in json.dumps(others) and TOKEN.encode() not in hit.body
    assert all(TOKEN not in o.detail for o in outcomes.values())


def test_a_non_latin1_title_reaches_ntfy_encoded(receiver: Receiver) -> None:
    sink = Sink(kind=SinkKind.NTFY, url=f"{receiver.url}/t")
    out = anyio.run(deliver, sink, Message(title="café ✓ done", text="ok"))
    assert out.ok
    assert receiver.hits[0].headers["Title"].startswith("=?UTF-8?B?")


def test_a_500_is_retried_with_doubling_backoff_then_dead_lettered(receiver: Receiver) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:  # the backoff asked for, without waiting it out
        waits.append(s)

    counters: dict[str, int] = {}
    deliveries = Deliveries(counters, "reaction", sleep)
    sink = Sink(kind=SinkKind.SLACK, url=f"{receiver.url}/fail", retries=3)
    out = anyio.run(deliveries.send, sink, MSG)
    assert (out.ok, out.attempts, out.outcome, out.detail) == (False, 4, "failed", "HTTP 500")
    assert len(receiver.hits) == 4 and waits == [0.5, 1.0, 2.0]
    assert counters == {"reaction_retries": 3, "reaction_failed": 1, "reaction_dead_letter": 1}
    # A 401 will not heal: one attempt, dead-lettered at once.
    denied = anyio.run(deliveries.send, Sink(url=f"{receiver.url}/denied"), MSG)
    assert (denied.ok, denied.attempts, denied.detail) == (False, 1, "HTTP 401")
    assert len(receiver.hits) == 5 and counters["reaction_dead_letter"] == 2
    # Nobody listening: retried as unreachable, the same way.
    receiver.close()
    gone = anyio.run(deliveries.send, Sink(url=f"{receiver.url}/hook", retries=1), MSG)
    assert (gone.ok, gone.attempts, gone.detail) == (False, 2, "unreachable")
    assert counters["reaction_dead_letter"] == 3 and counters["reaction_retries"] == 4


def test_an_unreadable_token_file_fails_without_a_request(
    receiver: Receiver, tmp_path: Path
) -> None:
    sink = Sink(
        kind=SinkKind.GITHUB,
        url=receiver.url,
        repo="o/r",
        issue=1,
        token_file=str(tmp_path / "missing"),
    )
    out = send(sink)
    assert not out.ok and out.attempts == 0 and "token_file" in out.detail
    two = tmp_path / "two"
    two.write_text("a b")
    out = send(msgspec.structs.replace(sink, token_file=str(two)))
    assert not out.ok and "one token" in out.detail
    assert receiver.hits == []


def test_notify_send_runs_where_installed_and_is_skipped_where_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = send(Sink(kind=SinkKind.DESKTOP))
    assert (out.ok, out.outcome) == (True, "skipped")
    # A notify-send of our own on PATH, recording what it is given.
    bindir, argv_file = tmp_path / "bin", tmp_path / "argv.json"
    bindir.mkdir()
    exe = bindir / "notify-send"
    exe.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(argv_file)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bindir))
    out = send(Sink(kind=SinkKind.DESKTOP))
    assert (out.ok, out.outcome) == (True, "delivered")
    args = json.loads(argv_file.read_text())
    assert args == ["-a", "agentfleet", "-u", "critical", "--", MSG.title, MSG.text]


@pytest.mark.parametrize(
    ("sink", "says"),
    [
        (Sink(kind=SinkKind.GITHUB, repo="nope", issue=1, token_file="/t"), "owner/name"),
        (Sink(kind=SinkKind.FORGEJO, repo="o/r", issue=1, token_file="/t"), "API root"),
        (Sink(kind=SinkKind.GITEA, url="http://x", repo="o/r", issue=0, token_file="/t"), "issue"),
        (Sink(kind=SinkKind.GITHUB, repo="o/r", issue=2), "token_file"),
        (Sink(kind=SinkKind.NTFY, url="ftp://x"), "http"),
    ],
)
def test_a_sink_that_could_never_deliver_is_a_config_error(sink: Sink, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check("s", sink)
    with pytest.raises(ConfigError, match=says):
        _validate(ReactionsFile(sinks={"s": sink}))
