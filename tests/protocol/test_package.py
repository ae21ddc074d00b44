"""The protocol package stands alone: it imports neither side, and exports its public names."""
from __future__ import annotations

import subprocess
import sys

import protocol


def test_importing_protocol_loads_neither_the_tracer_nor_the_daemon():
    code = ("import sys, protocol, protocol.values, protocol.events, protocol.handshake; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tracer', 'optimizer_service')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_names_are_exported():
    for name in protocol.__all__:
        assert hasattr(protocol, name), name
    assert protocol.messages.Feedback is protocol.messages.MESSAGE_CLASSES["feedback"]
