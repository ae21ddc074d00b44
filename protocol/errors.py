"""Every error the wire protocol raises. Each bad input raises exactly one of these.

Callers catch `ProtocolError` to handle all of them; the subclasses say what
went wrong so a receiver can decide whether the connection is still usable:

- `FrameTooLarge`: the stream is out of sync (the announced body is never
  read), so the connection must be closed.
- `MalformedFrame`, `InvalidMessage`: one frame was bad; it has been consumed
  and the frames after it can still be decoded.
- `VersionMismatch`, `AuthenticationFailed`: the handshake failed; reply with
  a `Reject` carrying `str(error)` and close.
"""
from __future__ import annotations


class ProtocolError(Exception):
    """Base class: bad bytes, a bad message, or a failed handshake."""


class FrameTooLarge(ProtocolError):
    """A frame header announces (or a message would need) more than the maximum frame size."""

    def __init__(self, size: int, max_size: int, *, what: str = "frame header announces"):
        super().__init__(
            f"{what} {size} bytes, more than the maximum frame size of {max_size} bytes "
            f"(raise max_frame_size on both sides, or send smaller batches)"
        )
        self.size = size
        self.max_size = max_size


class MalformedFrame(ProtocolError):
    """A frame body is not a msgpack map with a str "kind" (truncated, corrupt, too nested...)."""


class InvalidMessage(ProtocolError):
    """A message (or one trace event) has a missing or mistyped field; `path` names it.

    `path` looks like ``feedback.text`` or ``definitions.functions[2].line``;
    the message reads ``"<path>: expected str, got int"``.
    """

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class UnencodableValue(InvalidMessage):
    """encode_message() was given a value msgpack cannot carry (named by `path`)."""


class UnknownEvent(InvalidMessage):
    """A trace event has a tag this side does not know (a newer minor version may add tags)."""


class VersionMismatch(ProtocolError):
    """The peer speaks a different major protocol version; the message says what to do."""

    def __init__(self, *, daemon: tuple[int, int], tracer: tuple[int, int]):
        daemon_text = f"{daemon[0]}.{daemon[1]}"
        tracer_text = f"{tracer[0]}.{tracer[1]}"
        if daemon[0] < tracer[0]:
            advice = "restart the daemon with `trace-daemon stop` (the next traced process starts a new one)"
        else:
            advice = ("this program runs an older trace-live than the daemon: upgrade it, "
                      "or stop the daemon with `trace-daemon stop`")
        super().__init__(f"daemon speaks protocol {daemon_text}, this tracer {tracer_text}: {advice}")
        self.daemon_version = daemon
        self.tracer_version = tracer


class AuthenticationFailed(ProtocolError):
    """The hello's auth token is missing or does not match the daemon's."""
