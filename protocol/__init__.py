"""Wire format shared by the tracer and the optimizer daemon. Imports neither.

    from protocol import PROTOCOL_VERSION, encode_message, FrameDecoder, messages as m
    data = encode_message(m.Feedback(episode=1, node=7, text="too long"))
    for message in FrameDecoder().feed(data): ...

Frames and messages: docs/internals.md §1; value summaries: §2 (`summarize`,
`render`); trace events: §3 (`protocol.events`).
"""
from __future__ import annotations

from . import events, messages
from .constants import DEFAULT_MAX_FRAME, PROTOCOL_VERSION
from .errors import (
    AuthenticationFailed,
    FrameTooLarge,
    InvalidMessage,
    MalformedFrame,
    ProtocolError,
    UnencodableValue,
    UnknownEvent,
    VersionMismatch,
)
from .events import validate_event
from .framing import FrameDecoder, decode_body, encode_message
from .handshake import check_hello, check_welcome, client_hello
from .values import render, summarize, validate_summary

__all__ = [
    "PROTOCOL_VERSION", "DEFAULT_MAX_FRAME",
    "encode_message", "decode_body", "FrameDecoder",
    "summarize", "render", "validate_summary", "validate_event",
    "check_hello", "check_welcome", "client_hello",
    "ProtocolError", "FrameTooLarge", "MalformedFrame", "InvalidMessage", "UnencodableValue",
    "UnknownEvent", "VersionMismatch", "AuthenticationFailed",
    "messages", "events",
]
