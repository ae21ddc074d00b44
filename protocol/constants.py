"""Protocol constants both sides must agree on."""
from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final[tuple[int, int]] = (1, 1)
"""(major, minor). A different major is rejected at the handshake; a newer
minor may add message kinds, event tags and fields, which older peers ignore."""

DEFAULT_MAX_FRAME: Final[int] = 16 * 1024 * 1024
"""Largest frame body (bytes) either side sends or accepts unless configured otherwise."""

HEADER_SIZE: Final[int] = 4
"""Each frame starts with its body length as a 4-byte big-endian unsigned int."""
