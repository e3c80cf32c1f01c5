"""A fake model endpoint the tests own: the real agent CLIs talk to it instead of a provider.

Stdlib only. One `FakeModel` serves, on 127.0.0.1 and a free port:

- Anthropic Messages, `POST /v1/messages` (SSE when `stream` is true, JSON otherwise) and
  `POST /v1/messages/count_tokens`: Claude Code, and pi (its `anthropic-messages` provider API);
- OpenAI Responses, `POST /v1/responses` (SSE): Codex with a `wire_api = "responses"`
  provider; `GET /v1/models` answers a one-model list;
- OpenAI Chat Completions, `POST /v1/chat/completions` (SSE), for pi's `openai-completions`.

Anything else gets `404` with an Anthropic-style error body and is logged in `unknown`.

What it answers is scripted on the text of the last user prompt (substring match, first rule
wins)::

    model = FakeModel(Script().on("slow", stream("one two three", seconds=15))
                              .on("run it", tool_call("touch /tmp/x")))
    with model:
        ...  # point the CLI at model.url
        model.wait_for_prompt("slow", timeout=10)

Behaviours: `text(s)`, `stream(s, seconds)`, `silent(seconds, then=s)`, `tool_call(command)`,
`error(status, message)`. A request whose newest input is a tool result (the CLI ran the tool,
or was refused) is answered with `after_tool` text, so a tool rule never loops. Requests with no
tools (Claude Code's side requests: titles, topic detection, quota probes) are answered at once
with a short text and never consume a rule, so a slow rule slows the agent's turn only.

Every request is recorded (`model.requests`: path, prompt, whether it was a main turn, whether
the client hung up mid-answer) so a test can assert the prompt reached the model.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_ANSWER = "Hello from the fake model."
AFTER_TOOL_ANSWER = "The command finished."
SIDE_ANSWER = "Fake title"
MODEL_ID = "fake-model"


# --- behaviours -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    kind: str  # "text" | "stream" | "silent" | "tool_call" | "error"
    text: str = ""
    seconds: float = 0.0
    command: str = ""
    status: int = 0
    message: str = ""


def text(answer: str) -> Behaviour:
    """Answer at once (streamed in a few quick chunks when the client streams)."""
    return Behaviour("text", text=answer)


def stream(answer: str, seconds: float) -> Behaviour:
    """Stream `answer` word by word, evenly over `seconds`."""
    return Behaviour("stream", text=answer, seconds=seconds)


def silent(seconds: float, then: str = DEFAULT_ANSWER) -> Behaviour:
    """Send nothing (headers included) for `seconds`, then answer `then`."""
    return Behaviour("silent", text=then, seconds=seconds)


def tool_call(command: str, preface: str = "") -> Behaviour:
    """Ask the CLI to run `command` with its shell tool (Bash, bash, shell, exec_command...)."""
    return Behaviour("tool_call", command=command, text=preface)


def error(status: int, message: str) -> Behaviour:
    """Fail the request with an HTTP error in the provider's error shape."""
    return Behaviour("error", status=status, message=message)


@dataclass
class Script:
    """Rules matched on the last user prompt text; the first rule whose substring occurs wins."""

    rules: list[tuple[str, Behaviour]] = field(default_factory=list)
    default: Behaviour = field(default_factory=lambda: text(DEFAULT_ANSWER))
    after_tool: str = AFTER_TOOL_ANSWER

    def on(self, substring: str, behaviour: Behaviour) -> Script:
        self.rules.append((substring, behaviour))
        return self

    def pick(self, prompt: str) -> Behaviour:
        for substring, behaviour in self.rules:
            if substring in prompt:
                return behaviour
        return self.default


# --- records ----------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    method: str
    api: str  # "anthropic" | "responses" | "chat" | "other"
    prompt: str  # text of the last user message ("" when none)
    main: bool  # the request offered tools: an agent turn, not a side request
    after_tool: bool  # the newest input was a tool result
    behaviour: str
    body: dict[str, Any]
    user_agent: str
    at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    hung_up: bool = False  # the client closed the connection before the answer ended


# --- prompt extraction ------------------------------------------------------------------------


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                out.append(str(part.get("text", "")))
            elif isinstance(part, str):
                out.append(part)
    return out


def _strip_reminders(s: str) -> str:
    # Claude Code wraps context in <system-reminder> blocks inside the user message.
    while "<system-reminder>" in s and "</system-reminder>" in s:
        a = s.index("<system-reminder>")
        b = s.index("</system-reminder>", a) + len("</system-reminder>")
        s = s[:a] + s[b:]
    return s.strip()


def anthropic_prompt(body: dict[str, Any]) -> tuple[str, bool]:
    """(last user text, newest input is a tool result) for a Messages request."""
    messages = body.get("messages") or []
    after_tool = False
    if messages:
        last = messages[-1]
        content = last.get("content")
        if last.get("role") == "user" and isinstance(content, list):
            # A tool result with the operator's next prompt beside it (Claude sends both after
            # an interrupted tool call) is a new prompt, not the tool's turn.
            typed = [t for t in (_strip_reminders(x) for x in _texts(content)) if t]
            after_tool = not typed and any(
                isinstance(p, dict) and p.get("type") == "tool_result" for p in content
            )
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        texts = [t for t in (_strip_reminders(x) for x in _texts(message.get("content"))) if t]
        if texts:
            return "\n".join(texts), after_tool
    return "", after_tool


def responses_prompt(body: dict[str, Any]) -> tuple[str, bool]:
    items = body.get("input")
    if isinstance(items, str):
        return items, False
    items = items or []
    after_tool = (
        bool(items)
        and isinstance(items[-1], dict)
        and items[-1].get("type")
        in (
            "function_call_output",
            "custom_tool_call_output",
            "local_shell_call_output",
        )
    )
    for item in reversed(items):
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        texts = [t for t in _texts(item.get("content")) if t.strip()]
        # Codex sends its environment context and AGENTS.md as user messages too.
        texts = [
            t
            for t in texts
            if not t.lstrip().startswith(
                ("<environment_context>", "<user_instructions>", "# AGENTS.md")
            )
        ]
        if texts:
            return "\n".join(texts), after_tool
    return "", after_tool


def chat_prompt(body: dict[str, Any]) -> tuple[str, bool]:
    messages = body.get("messages") or []
    after_tool = bool(messages) and messages[-1].get("role") == "tool"
    for message in reversed(messages):
        if message.get("role") == "user":
            texts = [t for t in _texts(message.get("content")) if t.strip()]
            if texts:
                return "\n".join(texts), after_tool
    return "", after_tool


# --- tool selection ---------------------------------------------------------------------------


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        name = tool.get("name") or (tool.get("function") or {}).get("name")
        if name:
            names.append(name)
        elif tool.get("type") == "local_shell":
            names.append("local_shell")
    return names


def shell_call(body: dict[str, Any], command: str) -> tuple[str, dict[str, Any]]:
    """(tool name, arguments) that run `command` with the shell tool this request offers.

    Codex calls ask for `require_escalated` (unsandboxed) execution, which its `on-request`
    approval policy always puts to the user; Claude Code asks for any Bash command not allowed
    by its settings; pi runs its bash tool without asking."""
    names = _tool_names(body)
    escalate = {
        "sandbox_permissions": "require_escalated",
        "justification": "The fake model wants to run this command.",
    }
    candidates: list[tuple[str, dict[str, Any]]] = [
        ("Bash", {"command": command, "description": "Run a command"}),  # Claude Code
        ("bash", {"command": command}),  # pi
        ("exec_command", {"cmd": command, **escalate}),  # Codex (unified exec)
        ("shell_command", {"command": command, **escalate}),  # Codex
        ("shell", {"command": ["bash", "-lc", command], **escalate}),  # Codex (classic)
    ]
    for name, args in candidates:
        if name in names:
            return name, args
    return (names[0] if names else "shell"), {"command": command}


# --- the server -------------------------------------------------------------------------------


def _words(s: str) -> list[str]:
    """`s` cut into chunks that concatenate back to `s` (each word with its trailing space)."""
    out, cur = [], ""
    for ch in s:
        cur += ch
        if ch in " \n":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out or [""]


class _HungUp(Exception):
    pass


class FakeModel:
    def __init__(self, script: Script | None = None, host: str = "127.0.0.1") -> None:
        self.script = script or Script()
        self.requests: list[Request] = []
        self.unknown: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                model._get(self)

            def do_POST(self) -> None:
                model._post(self)

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL without a path (Anthropic style: the SDK appends /v1/messages)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """Base URL with /v1 (OpenAI style: clients append /responses, /chat/completions)."""
        return f"{self.url}/v1"

    def start(self) -> FakeModel:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-model",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # queries for tests

    def prompts(self, main_only: bool = True) -> list[str]:
        with self._lock:
            return [r.prompt for r in self.requests if r.main or not main_only]

    def find(self, substring: str, main_only: bool = True) -> Request | None:
        with self._lock:
            for r in self.requests:
                if (r.main or not main_only) and substring in r.prompt:
                    return r
        return None

    def wait_for_prompt(self, substring: str, timeout: float, main_only: bool = True) -> Request:
        """The first recorded request whose prompt contains `substring`; AssertionError on
        timeout, naming the prompts that did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.requests:
                    if (r.main or not main_only) and substring in r.prompt:
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(r.path, r.prompt[:80]) for r in self.requests]
                    raise AssertionError(
                        f"fake model never got a prompt containing {substring!r}; got {got}"
                    )
                self._cond.wait(min(left, 0.2))

    def wait_for(self, pred: Any, timeout: float) -> Request:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.requests:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("fake model: no matching request")
                self._cond.wait(min(left, 0.2))

    # dispatch

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path.rstrip("/") in ("/v1/models", "/models"):
            self._json(
                h,
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": MODEL_ID,
                            "object": "model",
                            "created": 0,
                            "owned_by": "fake",
                            "type": "model",
                            "display_name": "Fake model",
                        }
                    ],
                    "models": [],
                    "has_more": False,
                },
            )
            return
        self._unknown(h, path)

    def _read_body(self, h: BaseHTTPRequestHandler) -> dict[str, Any]:
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        if h.headers.get("Content-Encoding") in ("zstd", "gzip", "br"):
            enc = h.headers.get("Content-Encoding")
            if enc == "gzip":
                import gzip

                raw = gzip.decompress(raw)
            else:
                self.unknown.append(("content-encoding", str(enc)))
                return {}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0].rstrip("/")
        body = self._read_body(h)
        if path.endswith("/messages/count_tokens"):
            self._record(h, path, "anthropic", body, "count_tokens", main=False)
            self._json(h, 200, {"input_tokens": 42})
            return
        if path.endswith("/messages"):
            prompt, after_tool = anthropic_prompt(body)
            self._serve(h, path, "anthropic", body, prompt, after_tool)
            return
        if path.endswith("/responses"):
            prompt, after_tool = responses_prompt(body)
            self._serve(h, path, "responses", body, prompt, after_tool)
            return
        if path.endswith("/chat/completions"):
            prompt, after_tool = chat_prompt(body)
            self._serve(h, path, "chat", body, prompt, after_tool)
            return
        if path.endswith("/event_logging/batch") or "telemetry" in path or "metrics" in path:
            self._json(h, 200, {})
            return
        self._unknown(h, path)

    def _unknown(self, h: BaseHTTPRequestHandler, path: str) -> None:
        with self._lock:
            self.unknown.append((h.command, path))
        self._json(
            h, 404, {"type": "error", "error": {"type": "not_found_error", "message": f"no {path}"}}
        )

    def _record(
        self,
        h: BaseHTTPRequestHandler,
        path: str,
        api: str,
        body: dict[str, Any],
        behaviour: str,
        *,
        main: bool,
        prompt: str = "",
        after_tool: bool = False,
    ) -> Request:
        r = Request(
            path=path,
            method=h.command,
            api=api,
            prompt=prompt,
            main=main,
            after_tool=after_tool,
            behaviour=behaviour,
            body=body,
            user_agent=h.headers.get("User-Agent", ""),
        )
        with self._cond:
            self.requests.append(r)
            self._cond.notify_all()
        return r

    def _serve(
        self,
        h: BaseHTTPRequestHandler,
        path: str,
        api: str,
        body: dict[str, Any],
        prompt: str,
        after_tool: bool,
    ) -> None:
        main = bool(body.get("tools"))
        if not main:
            b = text(SIDE_ANSWER)
        elif after_tool:
            b = text(self.script.after_tool)
        else:
            b = self.script.pick(prompt)
        r = self._record(
            h, path, api, body, b.kind, main=main, prompt=prompt, after_tool=after_tool
        )
        try:
            if b.kind == "silent":
                time.sleep(b.seconds)
            if b.kind == "error":
                self._error(h, api, b.status, b.message)
            elif body.get("stream"):
                events = {
                    "anthropic": self._anthropic_events,
                    "responses": self._responses_events,
                    "chat": self._chat_events,
                }[api](body, b)
                self._sse(h, events, api)
            else:
                payload = {
                    "anthropic": self._anthropic_json,
                    "responses": self._responses_json,
                    "chat": self._chat_json,
                }[api](body, b)
                self._json(h, 200, payload)
        except (_HungUp, BrokenPipeError, ConnectionResetError):
            r.hung_up = True
            h.close_connection = True
        finally:
            r.done.set()
            with self._cond:
                self._cond.notify_all()

    # plumbing

    def _json(self, h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("request-id", "req_" + uuid.uuid4().hex[:20])
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def _error(self, h: BaseHTTPRequestHandler, api: str, status: int, message: str) -> None:
        if api == "anthropic":
            kind = {
                400: "invalid_request_error",
                401: "authentication_error",
                403: "permission_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": None,
                    "param": None,
                }
            }
        self._json(h, status, payload)

    def _sse(
        self,
        h: BaseHTTPRequestHandler,
        events: Iterator[tuple[str, dict[str, Any]] | float],
        api: str,
    ) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("request-id", "req_" + uuid.uuid4().hex[:20])
        h.end_headers()
        h.wfile.flush()

        def chunk(data: bytes) -> None:
            try:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                h.wfile.flush()
            except OSError as e:
                raise _HungUp from e

        for ev in events:
            if isinstance(ev, float):
                time.sleep(ev)
                continue
            name, data = ev
            if api == "chat":
                line = "[DONE]" if name == "[DONE]" else json.dumps(data)
                payload = f"data: {line}\n\n"
            else:
                payload = f"event: {name}\ndata: {json.dumps(data)}\n\n"
            chunk(payload.encode())
        chunk(b"")  # last chunk (empty)

    @staticmethod
    def _pace(b: Behaviour) -> tuple[list[str], float]:
        chunks = _words(b.text)
        if b.kind == "stream" and b.seconds > 0:
            return chunks, b.seconds / max(len(chunks), 1)
        return chunks, 0.0

    # Anthropic Messages

    def _anthropic_json(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        stop = "end_turn"
        if b.kind == "tool_call":
            if b.text:
                content.append({"type": "text", "text": b.text})
            name, args = shell_call(body, b.command)
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:20],
                    "name": name,
                    "input": args,
                }
            )
            stop = "tool_use"
        else:
            content.append({"type": "text", "text": b.text})
        return {
            "id": "msg_" + uuid.uuid4().hex[:20],
            "type": "message",
            "role": "assistant",
            "model": body.get("model", MODEL_ID),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 10,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def _anthropic_events(
        self,
        body: dict[str, Any],
        b: Behaviour,
    ) -> Iterator[tuple[str, dict[str, Any]] | float]:
        yield (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_" + uuid.uuid4().hex[:20],
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", MODEL_ID),
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 10,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            },
        )
        index = 0
        stop = "end_turn"
        if b.kind == "tool_call":
            if b.text:
                yield from self._anthropic_text_block(index, [b.text], 0.0)
                index += 1
            name, args = shell_call(body, b.command)
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_" + uuid.uuid4().hex[:20],
                        "name": name,
                        "input": {},
                    },
                },
            )
            raw = json.dumps(args)
            half = len(raw) // 2
            for part in (raw[:half], raw[half:]):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    },
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
            stop = "tool_use"
        else:
            chunks, gap = self._pace(b)
            yield from self._anthropic_text_block(index, chunks, gap)
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 10},
            },
        )
        yield "message_stop", {"type": "message_stop"}

    @staticmethod
    def _anthropic_text_block(
        index: int,
        chunks: list[str],
        gap: float,
    ) -> Iterator[tuple[str, dict[str, Any]] | float]:
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        )
        for c in chunks:
            if gap:
                yield gap
            yield (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": c},
                },
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}

    # OpenAI Responses

    def _responses_items(self, body: dict[str, Any], b: Behaviour) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if b.kind == "tool_call":
            name, args = shell_call(body, b.command)
            items.append(
                {
                    "type": "function_call",
                    "id": "fc_" + uuid.uuid4().hex[:20],
                    "call_id": "call_" + uuid.uuid4().hex[:20],
                    "name": name,
                    "arguments": json.dumps(args),
                    "status": "completed",
                }
            )
        else:
            items.append(
                {
                    "type": "message",
                    "id": "msg_" + uuid.uuid4().hex[:20],
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": b.text, "annotations": []}],
                }
            )
        return items

    @staticmethod
    def _response_obj(
        body: dict[str, Any], rid: str, status: str, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": body.get("model", MODEL_ID),
            "output": output,
            "usage": {
                "input_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 10,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 20,
            }
            if status == "completed"
            else None,
        }

    def _responses_json(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        rid = "resp_" + uuid.uuid4().hex[:20]
        return self._response_obj(body, rid, "completed", self._responses_items(body, b))

    def _responses_events(
        self,
        body: dict[str, Any],
        b: Behaviour,
    ) -> Iterator[tuple[str, dict[str, Any]] | float]:
        rid = "resp_" + uuid.uuid4().hex[:20]
        seq = iter(range(1_000_000))
        yield (
            "response.created",
            {
                "type": "response.created",
                "sequence_number": next(seq),
                "response": self._response_obj(body, rid, "in_progress", []),
            },
        )
        yield (
            "response.in_progress",
            {
                "type": "response.in_progress",
                "sequence_number": next(seq),
                "response": self._response_obj(body, rid, "in_progress", []),
            },
        )
        items = self._responses_items(body, b)
        for i, item in enumerate(items):
            if item["type"] == "message":
                started = dict(item, status="in_progress", content=[])
                yield (
                    "response.output_item.added",
                    {
                        "type": "response.output_item.added",
                        "sequence_number": next(seq),
                        "output_index": i,
                        "item": started,
                    },
                )
                part = {"type": "output_text", "text": "", "annotations": []}
                yield (
                    "response.content_part.added",
                    {
                        "type": "response.content_part.added",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": i,
                        "content_index": 0,
                        "part": part,
                    },
                )
                chunks, gap = self._pace(b)
                for c in chunks:
                    if gap:
                        yield gap
                    yield (
                        "response.output_text.delta",
                        {
                            "type": "response.output_text.delta",
                            "sequence_number": next(seq),
                            "item_id": item["id"],
                            "output_index": i,
                            "content_index": 0,
                            "delta": c,
                            "logprobs": [],
                        },
                    )
                yield (
                    "response.output_text.done",
                    {
                        "type": "response.output_text.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": i,
                        "content_index": 0,
                        "text": b.text,
                        "logprobs": [],
                    },
                )
                yield (
                    "response.content_part.done",
                    {
                        "type": "response.content_part.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": i,
                        "content_index": 0,
                        "part": dict(part, text=b.text),
                    },
                )
            else:
                yield (
                    "response.output_item.added",
                    {
                        "type": "response.output_item.added",
                        "sequence_number": next(seq),
                        "output_index": i,
                        "item": dict(item, arguments="", status="in_progress"),
                    },
                )
                yield (
                    "response.function_call_arguments.delta",
                    {
                        "type": "response.function_call_arguments.delta",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": i,
                        "delta": item["arguments"],
                    },
                )
                yield (
                    "response.function_call_arguments.done",
                    {
                        "type": "response.function_call_arguments.done",
                        "sequence_number": next(seq),
                        "item_id": item["id"],
                        "output_index": i,
                        "arguments": item["arguments"],
                    },
                )
            yield (
                "response.output_item.done",
                {
                    "type": "response.output_item.done",
                    "sequence_number": next(seq),
                    "output_index": i,
                    "item": item,
                },
            )
        yield (
            "response.completed",
            {
                "type": "response.completed",
                "sequence_number": next(seq),
                "response": self._response_obj(body, rid, "completed", items),
            },
        )

    # OpenAI Chat Completions

    def _chat_json(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": b.text or None}
        finish = "stop"
        if b.kind == "tool_call":
            name, args = shell_call(body, b.command)
            message["tool_calls"] = [
                {
                    "id": "call_" + uuid.uuid4().hex[:20],
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            ]
            finish = "tool_calls"
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:20],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL_ID),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    def _chat_events(
        self,
        body: dict[str, Any],
        b: Behaviour,
    ) -> Iterator[tuple[str, dict[str, Any]] | float]:
        cid = "chatcmpl-" + uuid.uuid4().hex[:20]

        def ev(delta: dict[str, Any], finish: str | None = None) -> tuple[str, dict[str, Any]]:
            return "chunk", {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", MODEL_ID),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        yield ev({"role": "assistant", "content": ""})
        if b.kind == "tool_call":
            name, args = shell_call(body, b.command)
            yield ev(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_" + uuid.uuid4().hex[:20],
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                    ]
                }
            )
            yield ev({}, "tool_calls")
        else:
            chunks, gap = self._pace(b)
            for c in chunks:
                if gap:
                    yield gap
                yield ev({"content": c})
            yield ev({}, "stop")
        yield "[DONE]", {}
