"""A small blocking client for the daemon's control connection (`trace-daemon` commands).

It speaks the same framed protocol as the tracer, with an empty session
name in its Hello: such a connection joins no session and may only ask for
status and run admin requests.
"""
from __future__ import annotations

import itertools
import os
import socket
from typing import Any, Final

from protocol import FrameDecoder, ProtocolError, client_hello, encode_message
from protocol import messages as m

CLIENT_NAME: Final = "trace-daemon"


class DaemonNotRunning(RuntimeError):
    """Nothing answers at the socket path."""


class CommandFailed(RuntimeError):
    """The daemon answered a request with an error; the message is the daemon's."""


class AdminClient:
    """A control connection; use as a context manager."""

    def __init__(self, socket_path: str, timeout: float = 10.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._decoder = FrameDecoder()
        self._pending: list[Any] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(socket_path)
        except OSError as exc:
            self.sock.close()
            raise DaemonNotRunning(f"no daemon is listening at {socket_path} ({exc.strerror or exc})") from None
        self.sock.sendall(encode_message(client_hello("", auth_token=os.environ.get("TRACE_AUTH_TOKEN") or None,
                                                       client_name=CLIENT_NAME)))
        first = self._receive()
        if isinstance(first, m.Reject):
            self.close()
            raise CommandFailed(f"the daemon refused the connection: {first.reason}")
        if not isinstance(first, m.Welcome):
            self.close()
            raise CommandFailed(f"the daemon answered the hello with {type(first).__name__}")
        self.welcome = first

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _receive(self) -> Any:
        while not self._pending:
            try:
                chunk = self.sock.recv(256 * 1024)
            except socket.timeout:
                raise CommandFailed(f"the daemon did not answer within {self.timeout:g} s") from None
            if not chunk:
                raise CommandFailed("the daemon closed the connection")
            try:
                self._pending.extend(self._decoder.feed(chunk))
            except ProtocolError as exc:
                raise CommandFailed(f"the daemon sent a bad frame: {exc}") from None
        return self._pending.pop(0)

    def _answer(self, request_id: int) -> Any:
        while True:
            reply = self._receive()
            if getattr(reply, "request_id", None) == request_id:
                return reply
            if isinstance(reply, m.Error):
                raise CommandFailed(f"{reply.code}: {reply.message}")

    def status(self) -> dict[str, Any]:
        request_id = next(self._ids)
        self.sock.sendall(encode_message(m.StatusQuery(request_id=request_id)))
        return self._answer(request_id).status

    def request(self, command: str, **args: Any) -> Any:
        """Run admin `command` and return its data; raises CommandFailed with the daemon's error."""
        request_id = next(self._ids)
        self.sock.sendall(encode_message(m.Request(request_id=request_id, command=command,
                                                   args={k: v for k, v in args.items() if v is not None})))
        reply = self._answer(request_id)
        if isinstance(reply, m.Error):
            raise CommandFailed(f"{reply.code}: {reply.message}")
        if not reply.ok:
            raise CommandFailed(reply.error or f"{command} failed")
        return reply.data
