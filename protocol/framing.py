"""Frames: a 4-byte big-endian body length, then a msgpack body of exactly that length.

`encode_message` turns a message into one frame; `FrameDecoder` turns a byte
stream, cut anywhere, back into messages; `decode_body` decodes one body.
Every bad input raises a `ProtocolError` subclass and nothing else: msgpack's
own exceptions, UnicodeDecodeError, MemoryError from lengths declared inside
a body, too deep nesting... are all reported as `MalformedFrame`.
"""
from __future__ import annotations

import struct
from typing import Any, Iterator

import msgpack

from .constants import DEFAULT_MAX_FRAME, HEADER_SIZE
from .errors import FrameTooLarge, MalformedFrame, ProtocolError, UnencodableValue
from .messages import Message, from_wire, to_wire
from .schema import short_repr, type_label

_HEADER = struct.Struct(">I")
_MAX_HEADER_VALUE = 2**32 - 1

# packb, not a reused Packer: it is thread-safe, and a Packer measured no
# faster for batches of the size the tracer sends.
_packb = msgpack.packb


def encode_message(message: Message, *, max_frame_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame (header + body) for `message`.

    Raises UnencodableValue naming the field that cannot be sent (wrong type,
    int beyond 64 bits, lone surrogate in a str, non-str map key in a
    free-form field...), and FrameTooLarge when the body would exceed
    `max_frame_size`. Trace events are only checked to be arrays here (see
    `protocol.events`), so a non-str map key inside an event is caught by the
    receiver, which rejects the whole frame as MalformedFrame.
    """
    wire = to_wire(message)
    try:
        body = _packb(wire)
    except Exception as error:  # msgpack raises TypeError, OverflowError, ValueError, UnicodeEncodeError
        raise _locate_unencodable(wire, wire["kind"], error) from error
    if len(body) > max_frame_size:
        raise FrameTooLarge(len(body), max_frame_size, what=f"{wire['kind']} message encodes to")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes | bytearray | memoryview) -> Message:
    """The message in one frame body (without its header).

    Raises MalformedFrame when the body is not one msgpack map, InvalidMessage
    when a field is missing or mistyped, VersionMismatch for a handshake in
    another major version.
    """
    size = len(body)
    try:
        data = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            # A timestamp extension becomes an int of nanoseconds, so decoded
            # data is only ever None/bool/int/float/str/bytes/list/dict.
            timestamp=2,
            ext_hook=_refuse_extension,
            # A length declared inside the body can never exceed the body
            # itself, so nothing allocates more than the frame size.
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )
    except ProtocolError:
        raise
    except Exception as error:  # see the module docstring: nothing else escapes
        raise MalformedFrame(f"frame body is not one valid msgpack value: {_describe(error)}") from error
    return from_wire(data)


class FrameDecoder:
    """Turns a byte stream, fed in chunks cut anywhere, into messages.

    ``for message in decoder.feed(chunk): ...`` yields every message completed
    by `chunk` (there may be none, or many). A header announcing more than
    `max_frame_size` raises FrameTooLarge as soon as its 4 bytes arrive,
    before any of the body is buffered; the stream is then out of sync and
    every later feed() raises FrameTooLarge again. A complete frame that is
    bad (MalformedFrame, InvalidMessage, VersionMismatch) is consumed before
    the error is raised, and the messages before it have already been
    yielded, so nothing is lost: ``feed(b"")`` continues with the frames that
    follow it.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME):
        if not isinstance(max_frame_size, int) or not 0 < max_frame_size <= _MAX_HEADER_VALUE:
            raise ValueError(f"max_frame_size must be an int from 1 to {_MAX_HEADER_VALUE}, got {max_frame_size!r}")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._oversized: int | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Message]:
        """Buffer `data` and return an iterator over the messages now complete."""
        if self._oversized is not None:
            raise FrameTooLarge(self._oversized, self.max_frame_size)
        self._buffer += data
        return self._complete_messages()

    def _complete_messages(self) -> Iterator[Message]:
        buffer = self._buffer
        while len(buffer) >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buffer)
            if size > self.max_frame_size:
                self._oversized = size
                del buffer[:]
                raise FrameTooLarge(size, self.max_frame_size)
            end = HEADER_SIZE + size
            if len(buffer) < end:
                return
            body = bytes(buffer[HEADER_SIZE:end])
            # Deleting from the front of a bytearray is O(1) in CPython (it moves
            # the start pointer), so many frames in one chunk stay linear.
            del buffer[:end]
            yield decode_body(body)


def _refuse_extension(code: int, data: bytes) -> Any:
    raise MalformedFrame(f"msgpack extension type {code} is not part of the protocol")


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, RecursionError) or "StackError" in type(error).__name__:
        text = "nested too deep"
    elif isinstance(error, MemoryError):
        text = "a declared length is too large for memory"
    return text if len(text) <= 200 else text[:197] + "..."


def _locate_unencodable(value: Any, path: str, error: Exception, depth: int = 0) -> UnencodableValue:
    """Find the innermost part of `value` msgpack refuses, and name it (slow; only after a failure)."""
    children: Any = ()
    if isinstance(value, dict):
        for key in value:
            try:
                _packb(key)
            except Exception:
                return UnencodableValue(path, f"map key of type {type_label(key)} cannot be sent (use str keys)")
        children = ((f".{k}" if depth == 0 else f"[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        children = ((f"[{i}]", v) for i, v in enumerate(value))
    if depth < 32:  # beyond that, a value that contains itself would never end
        for key, child in children:
            try:
                _packb(child)
            except Exception as child_error:
                return _locate_unencodable(child, path + key, child_error, depth + 1)
    if isinstance(error, OverflowError) and isinstance(value, int):
        problem = f"int of {value.bit_length()} bits does not fit in 64 bits"
    elif isinstance(error, UnicodeEncodeError):
        problem = ("str is not valid UTF-8 (it holds a lone surrogate); "
                   "clean it with .encode('utf-8', 'backslashreplace').decode() first")
    elif isinstance(error, TypeError):
        problem = f"{type_label(value)} cannot be sent (use plain data: None, bool, int, float, str, bytes, lists, str-keyed dicts)"
    elif "recursion" in str(error).lower() or depth >= 32:
        problem = "nested too deep (or contains itself)"
    else:
        problem = f"cannot be encoded ({short_repr(str(error), 120)})"
    return UnencodableValue(path, problem)
