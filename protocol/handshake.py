"""The versioned handshake: the client's Hello, the daemon's check, the client's check of the Welcome."""
from __future__ import annotations

import hmac
import os
import platform
import sys

from .constants import PROTOCOL_VERSION
from .errors import AuthenticationFailed, InvalidMessage, VersionMismatch
from .messages import Hello, Welcome


def client_hello(session: str, *, auth_token: str | None = None, granularity: str = "call",
                 client_name: str = "") -> Hello:
    """The Hello this process sends: protocol version, Python version, pid and argv filled in.

    argv entries that are not valid UTF-8 (undecodable bytes, which Python
    keeps as lone surrogates) are escaped so the Hello can always be sent.
    """
    argv = [_sendable(arg) for arg in sys.argv]
    return Hello(
        protocol=PROTOCOL_VERSION,
        python=platform.python_version(),
        pid=os.getpid(),
        argv=argv,
        session=session,
        auth_token=auth_token,
        granularity=granularity,
        client_name=client_name,
    )


def check_hello(hello: Hello, *, auth_token: str | None = None) -> None:
    """Daemon side: accept `hello` or raise.

    Raises VersionMismatch when the client's major version differs (its
    message is what the client should show), AuthenticationFailed when the
    daemon has an `auth_token` and the hello does not carry the same one.
    A different minor version is accepted. Anything but a Hello (a client
    that starts with another message) raises InvalidMessage.
    """
    if not isinstance(hello, Hello):
        kind = getattr(hello, "KIND", None) or getattr(hello, "kind", None) or type(hello).__name__
        raise InvalidMessage("message", f"expected a hello as the first message, got {kind}")
    if hello.protocol[0] != PROTOCOL_VERSION[0]:
        raise VersionMismatch(daemon=PROTOCOL_VERSION, tracer=tuple(hello.protocol))
    if auth_token is not None:
        offered = hello.auth_token
        if offered is None:
            raise AuthenticationFailed(
                "the daemon requires an auth token and this process sent none: "
                "configure the same token for the tracer as for the daemon")
        if not hmac.compare_digest(offered.encode("utf-8", "surrogatepass"),
                                   auth_token.encode("utf-8", "surrogatepass")):
            raise AuthenticationFailed(
                "the auth token this process sent does not match the daemon's: "
                "configure the same token for the tracer as for the daemon")


def check_welcome(welcome: Welcome) -> None:
    """Client side: raise VersionMismatch when the daemon speaks another major version."""
    if welcome.protocol[0] != PROTOCOL_VERSION[0]:
        raise VersionMismatch(daemon=tuple(welcome.protocol), tracer=PROTOCOL_VERSION)


def _sendable(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
