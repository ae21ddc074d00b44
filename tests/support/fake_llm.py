"""A loopback HTTP server that speaks the OpenAI and Anthropic wire formats.

Tests, the end-to-end suite and the quickstart demo point the official SDKs
at it (OPENAI_BASE_URL=http://127.0.0.1:PORT/v1, ANTHROPIC_BASE_URL=
http://127.0.0.1:PORT) so that nothing ever calls a real provider and no
SDK is monkeypatched. Answers come from a script: a list of replies served
in order, each one either a completion text or an HTTP failure.

    with FakeLLMServer([Reply("{...json...}"), Reply.error(429, retry_after=0.01)]) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test")
        ...
        assert server.request_count == 1

A script file (for the CLI and for other processes) is a JSON list of reply
objects with the fields of `Reply`:

    [{"text": "{\"suggestion\": {\"x\": 60}}"},
     {"status": 429, "retry_after": 0.05},
     {"status": 200, "text": "TERMINATE", "delay": 0.2}]

CLI (prints the base URL, then serves until interrupted):

    python -m tests.support.fake_llm --port 0 --script replies.json
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

# The error "type" each provider uses for a status code, so that the SDKs
# raise the same exception classes they would against the real service.
_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                       404: "invalid_request_error", 429: "rate_limit_exceeded",
                       500: "server_error", 503: "server_error"}
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          403: "permission_error", 404: "not_found_error",
                          429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


class ScriptExhausted(RuntimeError):
    """The server got more requests than its script has replies."""


@dataclass
class Reply:
    """One scripted answer.

    `status` 200 returns `text` as the completion in the caller's wire
    format; any other status returns that provider's error body with
    `message`. `retry_after` (seconds) adds a Retry-After header; `delay`
    (seconds) sleeps before answering, to provoke client timeouts.
    `usage` overrides the token counts (prompt_tokens, completion_tokens).
    """

    text: str = ""
    status: int = 200
    message: str = ""
    retry_after: float | None = None
    delay: float = 0.0
    usage: dict[str, int] | None = None
    error_code: str | None = None

    @classmethod
    def error(cls, status: int, message: str = "", *, retry_after: float | None = None,
              code: str | None = None) -> "Reply":
        return cls(status=status, message=message or f"fake_llm scripted HTTP {status}",
                   retry_after=retry_after, error_code=code)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reply":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown reply field(s) {sorted(unknown)} in fake_llm script; "
                             f"allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


@dataclass
class RecordedRequest:
    """What the server received: path, headers (lower-cased names) and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    time: float = field(default_factory=time.monotonic)

    @property
    def provider(self) -> str:
        return "anthropic" if self.path.endswith("/messages") else "openai"

    @property
    def prompt_text(self) -> str:
        """All message text of the request (system included), joined by newlines."""
        parts: list[str] = []
        system = self.body.get("system")
        if isinstance(system, str):
            parts.append(system)
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(block.get("text", "") for block in content if isinstance(block, dict))
        return "\n".join(parts)


Responder = Callable[[RecordedRequest], Reply]


class FakeLLMServer:
    """A real HTTP server on 127.0.0.1 answering from a script (or a responder).

    `replies` are served in order, one per request. When they run out the
    server answers HTTP 500 "script exhausted" (and counts it in
    `exhausted`), unless `repeat_last` is set, in which case the last reply
    is served again. A `responder(request) -> Reply` replaces the script for
    tests that must answer from the prompt.
    """

    def __init__(self, replies: list[Reply] | None = None, *, responder: Responder | None = None,
                 repeat_last: bool = False, port: int = 0) -> None:
        self._replies = list(replies or [])
        self._responder = responder
        self._repeat_last = repeat_last
        self._lock = threading.Lock()
        self._next = 0
        self.requests: list[RecordedRequest] = []
        self.exhausted = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "FakeLLMServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-llm",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """Root URL; the Anthropic SDK takes it as is (it appends /v1/messages)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What OPENAI_BASE_URL must be (the OpenAI SDK appends /chat/completions)."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    # -- script ------------------------------------------------------------
    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def add_replies(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def _take_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._responder is not None:
                responder = self._responder
            else:
                responder = None
                if self._next < len(self._replies):
                    reply = self._replies[self._next]
                    self._next += 1
                    return reply
                if self._repeat_last and self._replies:
                    return self._replies[-1]
                self.exhausted += 1
                return Reply.error(500, f"fake_llm script exhausted after {len(self._replies)} replies")
        return responder(request)

    # -- HTTP --------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle's algorithm the
            # second waits for the client's delayed ACK (~40 ms per request).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                    return
                path = self.path.split("?", 1)[0]
                if path not in (OPENAI_PATH, ANTHROPIC_PATH):
                    self._send(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
                    return
                request = RecordedRequest(path=path, headers={k.lower(): v for k, v in self.headers.items()},
                                          body=body)
                try:
                    reply = server._take_reply(request)
                except Exception as exc:  # a broken responder must show up as an HTTP error, not a reset
                    reply = Reply.error(500, f"fake_llm responder failed: {type(exc).__name__}: {exc}")
                if reply.delay:
                    time.sleep(reply.delay)
                if path == ANTHROPIC_PATH:
                    status, payload = _anthropic_payload(reply, body)
                else:
                    status, payload = _openai_payload(reply, body)
                headers = {}
                if reply.retry_after is not None:
                    headers["retry-after"] = f"{reply.retry_after:g}"
                try:
                    self._send(status, payload, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to answer

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _usage(reply: Reply, request_body: dict[str, Any]) -> tuple[int, int]:
    if reply.usage:
        return int(reply.usage.get("prompt_tokens", 0)), int(reply.usage.get("completion_tokens", 0))
    prompt = RecordedRequest("", {}, request_body).prompt_text
    return _estimate_tokens(prompt), _estimate_tokens(reply.text)


def _openai_payload(reply: Reply, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if reply.status != 200:
        return reply.status, {"error": {"message": reply.message, "type": _OPENAI_ERROR_TYPES.get(reply.status, "error"),
                                        "param": None, "code": reply.error_code}}
    prompt_tokens, completion_tokens = _usage(reply, body)
    return 200, {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": reply.text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _anthropic_payload(reply: Reply, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if reply.status != 200:
        return reply.status, {"type": "error", "error": {
            "type": reply.error_code or _ANTHROPIC_ERROR_TYPES.get(reply.status, "api_error"),
            "message": reply.message}}
    prompt_tokens, completion_tokens = _usage(reply, body)
    return 200, {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", "fake"),
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
    }


def load_script(path: str) -> list[Reply]:
    """Read a JSON list of reply objects (see the module docstring)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a fake_llm script is a JSON list of reply objects, got {type(data).__name__}")
    return [Reply.from_dict(item) if isinstance(item, dict) else Reply(text=str(item)) for item in data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_llm",
                                     description="Serve scripted OpenAI/Anthropic answers on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--script", help="JSON file: list of replies (strings or reply objects)")
    parser.add_argument("--repeat-last", action="store_true", help="serve the last reply again when the script runs out")
    args = parser.parse_args(argv)
    replies = load_script(args.script) if args.script else []
    server = FakeLLMServer(replies, repeat_last=args.repeat_last, port=args.port).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
