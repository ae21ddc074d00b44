"""The handshake: what the client sends, and what the daemon accepts."""
from __future__ import annotations

import os
import platform
import sys

import pytest

from protocol import (
    PROTOCOL_VERSION, AuthenticationFailed, InvalidMessage, ProtocolError, VersionMismatch, check_hello, check_welcome,
    client_hello, decode_body, encode_message,
)
from protocol import messages as m


def hello(protocol=PROTOCOL_VERSION, auth_token=None) -> m.Hello:
    return m.Hello(protocol=protocol, python="3.12.1", pid=1, argv=["app.py"], session="s", auth_token=auth_token)


def test_protocol_version_is_1_1():
    assert PROTOCOL_VERSION == (1, 1)  # 1.1: `t` of call/ret/exc events may be None


def test_client_hello_describes_this_process():
    message = client_hello("my-session", client_name="worker")
    assert message.protocol == PROTOCOL_VERSION
    assert message.python == platform.python_version()
    assert message.pid == os.getpid()
    assert message.argv == sys.argv
    assert (message.session, message.client_name, message.granularity) == ("my-session", "worker", "call")


def test_client_hello_with_undecodable_argv_can_still_be_sent(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app.py", os.fsdecode(b"caf\xe9")])
    message = client_hello("s")
    assert decode_body(encode_message(message)[4:]).argv == ["app.py", "caf\\udce9"]


def test_same_major_and_another_minor_is_accepted():
    check_hello(hello(protocol=(PROTOCOL_VERSION[0], PROTOCOL_VERSION[1] + 5)))


def test_newer_major_tracer_is_told_to_restart_the_daemon():
    with pytest.raises(VersionMismatch) as caught:
        check_hello(hello(protocol=(2, 0)))
    assert str(caught.value).startswith("daemon speaks protocol 1.1, this tracer 2.0: restart the daemon with `trace-daemon stop`")
    assert caught.value.tracer_version == (2, 0)


def test_older_major_tracer_is_told_to_upgrade_or_stop_the_daemon():
    with pytest.raises(VersionMismatch, match="daemon speaks protocol 1.1, this tracer 0.9: .*upgrade.*trace-daemon stop"):
        check_hello(hello(protocol=(0, 9)))


def test_daemon_without_a_token_accepts_any_hello():
    check_hello(hello(auth_token="whatever"))
    check_hello(hello(auth_token=None))


def test_daemon_with_a_token_accepts_the_same_token():
    check_hello(hello(auth_token="s3cret"), auth_token="s3cret")


def test_daemon_with_a_token_rejects_a_hello_without_one():
    with pytest.raises(AuthenticationFailed, match="sent none"):
        check_hello(hello(auth_token=None), auth_token="s3cret")


def test_daemon_with_a_token_rejects_a_wrong_token():
    with pytest.raises(AuthenticationFailed, match="does not match"):
        check_hello(hello(auth_token="guess"), auth_token="s3cret")


def test_client_rejects_a_welcome_of_another_major():
    welcome = m.Welcome(protocol=(2, 0), daemon_pid=1, client_id=1, session="s", version=0)
    with pytest.raises(VersionMismatch, match="daemon speaks protocol 2.0, this tracer 1.1"):
        check_welcome(welcome)


def test_handshake_errors_are_protocol_errors():
    assert issubclass(VersionMismatch, ProtocolError) and issubclass(AuthenticationFailed, ProtocolError)


def test_first_message_that_is_not_a_hello_is_refused():
    with pytest.raises(InvalidMessage, match="expected a hello as the first message, got feedback"):
        check_hello(m.Feedback(episode=1, node=1, text=""))
