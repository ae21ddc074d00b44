"""Bad clients cannot hurt the daemon or the other clients."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

import msgpack
import pytest

from protocol import PROTOCOL_VERSION, encode_message
from protocol import messages as m
from tests.daemon.support import REPO, Client, wait_until


def raw_connection(env) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(env.socket)
    return sock


def still_serving(env, bystander: Client) -> None:
    """The bystander's connection and a brand-new one both work."""
    assert bystander.status()["pid"]
    with Client(env.socket, "fresh") as fresh:
        assert isinstance(fresh.welcome, m.Welcome)


def test_garbage_gets_an_error_and_only_that_connection_closes(env, daemon):
    bystander = Client(env.socket, "s")
    vandal = Client(env.socket, "s")
    vandal.send_raw(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    error = vandal.expect(m.Error)
    assert error.code == "malformed_frame" and "closing" in error.message
    assert vandal.closed_by_peer()
    still_serving(env, bystander)


def test_oversized_frame_is_refused_before_it_is_read(env, daemon):
    bystander = Client(env.socket, "s")
    vandal = Client(env.socket, "s")
    vandal.send_raw(struct.pack(">I", 2**31))
    error = vandal.expect(m.Error)
    assert error.code == "frame_too_large" and str(2**31) in error.message
    assert vandal.closed_by_peer()
    still_serving(env, bystander)


def test_client_dying_mid_frame_leaves_others_unaffected(env, daemon):
    bystander = Client(env.socket, "s")
    frame = encode_message(m.EventBatch(episode=1, events=[["v", 1, {"t": "int", "id": 1, "v": 1}]] * 100))
    dying = raw_connection(env)
    dying.sendall(encode_message(m.Hello(protocol=PROTOCOL_VERSION, python="3", pid=1, argv=[], session="s")))
    dying.sendall(frame[: len(frame) // 2])
    dying.close()
    still_serving(env, bystander)
    # The daemon notices the closed connection asynchronously: the dead
    # client must leave the session soon, and the bystander must stay in it.
    assert wait_until(lambda: len(bystander.status()["sessions"][0]["processes"]) == 1, timeout=5)


def test_garbage_before_hello_is_refused(env, daemon):
    sock = raw_connection(env)
    sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
    data = sock.recv(65536)
    assert data == b"" or b"frame_too_large" in data or b"malformed" in data
    sock.close()
    still_serving(env, Client(env.socket, "s"))


def test_first_message_must_be_hello(env, daemon):
    sock = raw_connection(env)
    sock.sendall(encode_message(m.StatusQuery(request_id=1)))
    body = sock.recv(65536)[4:]
    assert msgpack.unpackb(body)["code"] == "expected_hello"
    sock.close()


def test_invalid_message_gets_an_error_and_the_connection_goes_on(env, daemon):
    client = Client(env.socket, "s")
    body = msgpack.packb({"kind": "feedback", "episode": "one", "node": 1, "text": "x"})
    client.send_raw(struct.pack(">I", len(body)) + body)
    error = client.expect(m.Error)
    assert error.code == "invalid_message" and "feedback.episode" in error.message
    assert client.status()["pid"]


def test_hello_of_another_major_version_is_rejected_with_advice(env, daemon):
    body = msgpack.packb({"kind": "hello", "protocol": [9, 0], "python": "3", "pid": 1, "argv": [], "session": "s"})
    sock = raw_connection(env)
    sock.sendall(struct.pack(">I", len(body)) + body)
    reply = msgpack.unpackb(sock.recv(65536)[4:])
    assert reply["kind"] == "reject" and reply["protocol"] == list(PROTOCOL_VERSION)
    assert "protocol 1.1, this tracer 9.0" in reply["reason"]


def test_control_connection_cannot_send_session_messages(env, daemon):
    admin = Client(env.socket, "")
    admin.send(m.Feedback(episode=1, node=1, text="x"))
    assert admin.expect(m.Error).code == "no_session"


def test_unknown_admin_command_lists_the_known_ones(env, daemon):
    reply = Client(env.socket, "").request("frobnicate")
    assert not reply.ok and "unknown command 'frobnicate'" in reply.error and "rollback" in reply.error


def test_auth_token_is_required_when_the_daemon_has_one(env):
    proc = subprocess.Popen([sys.executable, "-m", "optimizer_service", "serve"], cwd=REPO,
                            env=env.environ(TRACE_AUTH_TOKEN="s3cret"), stderr=subprocess.PIPE)
    try:
        from tests.daemon.support import connectable, wait_until
        assert wait_until(lambda: connectable(env.socket), 20)
        refused = Client(env.socket, "s")
        assert isinstance(refused.welcome, m.Reject) and "auth token" in refused.welcome.reason
        from protocol import client_hello
        accepted = Client(env.socket, "s", hello=client_hello("s", auth_token="s3cret"))
        assert isinstance(accepted.welcome, m.Welcome)
    finally:
        from tests.daemon.support import stop_process
        stop_process(proc)


@pytest.mark.skipif(os.getuid() != 0 or not hasattr(socket, "SO_PEERCRED"), reason="needs root to act as another uid")
def test_peer_of_another_uid_is_refused(env, daemon):
    # The 0700 directory and 0600 socket already keep other users out; open
    # them up to show the daemon's own SO_PEERCRED check.
    os.chmod(os.path.dirname(env.socket), 0o755)
    os.chmod(env.socket, 0o666)
    code = f"""
import os, socket, sys
sys.path.insert(0, {str(REPO)!r})
from protocol import FrameDecoder, client_hello, encode_message
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect({env.socket!r})
# The daemon answers a refused peer at once, before any hello.
print(next(iter(FrameDecoder().feed(s.recv(65536)))).reason)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "this daemon serves only uid 0" in out.stdout, out.stderr
    still_serving(env, Client(env.socket, "s"))
