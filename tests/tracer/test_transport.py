"""The daemon connection: handshake, request/reply, pushed messages, reconnect."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

from protocol.constants import PROTOCOL_VERSION
from protocol import messages as m
from tests.tracer.test_transport_server import ProtocolServer
from tracer.errors import NotConnected, TracerError
from tracer.transport import (
    ConnectionChanged,
    ConnectionLost,
    DaemonError,
    DaemonUnavailable,
    HandshakeRejected,
    RequestTimeout,
    Transport,
)


def make_hello(session: str = "s1") -> m.Hello:
    return m.Hello(
        protocol=PROTOCOL_VERSION, python="3.x", pid=os.getpid(), argv=["prog", "--flag"],
        session=session, auth_token="secret", granularity="op", client_name="tests",
    )


@pytest.fixture
def sock_path(tmp_path):
    # Short: tmp_path can exceed the ~107-byte Unix socket limit.
    import tempfile
    directory = tempfile.mkdtemp(prefix="tl-")
    yield os.path.join(directory, "d.sock")


@pytest.fixture
def server(sock_path):
    with ProtocolServer(sock_path) as srv:
        yield srv


@pytest.fixture
def transport(sock_path):
    t = Transport(sock_path, make_hello, connect_timeout=0.5)
    yield t
    t.close()


def test_handshake_returns_welcome_and_daemon_sees_the_hello(server, transport):
    welcome = transport.connect()
    assert isinstance(welcome, m.Welcome)
    assert welcome.client_id == 1 and welcome.session == "s1"
    assert transport.connected
    hello = server.clients[0].hello
    assert (hello.pid, hello.argv, hello.auth_token, hello.granularity) == (os.getpid(), ["prog", "--flag"], "secret", "op")


def test_rejected_handshake_raises_with_the_daemons_reason(server, transport):
    server.reject_reason = "protocol 9.0 required"
    with pytest.raises(HandshakeRejected) as info:
        transport.connect()
    assert info.value.reason == "protocol 9.0 required"
    assert isinstance(info.value, NotConnected)
    assert not transport.connected


def test_no_daemon_raises_daemon_unavailable_naming_the_socket(sock_path, transport):
    started = time.monotonic()
    with pytest.raises(DaemonUnavailable, match="no optimizer daemon is listening at .*d.sock"):
        transport.connect()
    assert time.monotonic() - started < 0.5


def test_silent_listener_fails_the_handshake_within_the_connect_timeout(sock_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    t = Transport(sock_path, make_hello, connect_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(DaemonUnavailable, match="did not answer the handshake within 0.3 s"):
            t.connect()
        assert time.monotonic() - started < 1.0
    finally:
        t.close()
        listener.close()


def test_listener_speaking_another_protocol_is_reported_not_raised_raw(sock_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)

    def answer_garbage():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # a frame whose body is not msgpack
        time.sleep(0.5)
        conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    t = Transport(sock_path, make_hello, connect_timeout=1.0)
    try:
        with pytest.raises(DaemonUnavailable, match="does not speak the trace protocol"):
            t.connect()
    finally:
        t.close()
        listener.close()


def test_request_returns_the_reply_with_the_same_request_id(server, transport):
    transport.connect()
    rid = transport.next_request_id()
    reply = transport.request(m.StatusQuery(request_id=rid), timeout=2)
    assert isinstance(reply, m.StatusReply)
    assert reply.request_id == rid and reply.status == {"clients": 1}


def test_concurrent_requests_each_get_their_own_reply(server, transport):
    transport.connect()
    results: dict[int, object] = {}

    def ask(n: int) -> None:
        rid = transport.next_request_id()
        reply = transport.request(m.Request(request_id=rid, command="echo", args={"n": n}), timeout=5)
        results[n] = reply.data["echo"]["n"]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: n for n in range(16)}


def test_unanswered_request_raises_request_timeout(server, transport):
    server.answer_requests = False
    transport.connect()
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="did not answer StatusQuery"):
        transport.request(m.StatusQuery(request_id=transport.next_request_id()), timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0


def test_error_reply_raises_daemon_error_with_its_code(server, transport):
    transport.connect()
    with pytest.raises(DaemonError) as info:
        transport.request(m.Request(request_id=transport.next_request_id(), command="fail"), timeout=2)
    assert info.value.code == "bad_request"
    assert isinstance(info.value, TracerError)


def test_pushed_messages_reach_the_handler_for_their_class(server, transport):
    got = []
    arrived = threading.Event()
    transport.add_handler(m.Patch, lambda msg: (got.append(msg), arrived.set()))
    transport.connect()
    server.send_to_all(m.Patch(version=3, items=[m.PatchItem(name="p", kind="value", value=1)]))
    assert arrived.wait(2)
    assert got[0].version == 3 and got[0].items[0].name == "p"


def test_a_failing_handler_does_not_stop_the_receiver(server, transport):
    arrived = threading.Event()

    def broken(msg):
        raise RuntimeError("handler bug")

    transport.add_handler(m.Patch, broken)
    transport.add_handler(m.Patch, lambda msg: arrived.set())
    transport.connect()
    server.send_to_all(m.Patch(version=1, items=[]))
    assert arrived.wait(2)
    assert transport.handler_errors == 1
    rid = transport.next_request_id()
    assert transport.request(m.StatusQuery(request_id=rid), timeout=2).request_id == rid


def test_patch_sent_right_after_welcome_is_dispatched(server, sock_path):
    server.initial_patch = m.Patch(version=7, items=[])
    got = threading.Event()
    t = Transport(sock_path, make_hello)
    t.add_handler(m.Patch, lambda msg: got.set())
    try:
        t.connect()
        assert got.wait(2)
    finally:
        t.close()


def test_send_without_connection_raises_not_connected(transport):
    with pytest.raises(NotConnected):
        transport.send(m.EpisodeClosed(episode=1))


def test_reconnects_after_the_daemon_restarts(server, transport):
    reconnected = threading.Event()
    transport.add_connect_listener(lambda welcome: reconnected.set())
    transport.connect()
    first_generation = transport.generation
    server.kill()
    server.wait_for(lambda: not transport.connected)
    server.start()
    assert reconnected.wait(5)
    assert transport.connected and transport.reconnects == 1
    assert transport.generation == first_generation + 1
    assert [c.client_id for c in server.clients] == [1, 2]
    transport.send(m.EpisodeClosed(episode=4))
    server.wait_for(lambda: server.messages(m.EpisodeClosed, client=2))


def test_send_with_a_stale_generation_raises_connection_changed(server, transport):
    transport.connect()
    old = transport.generation
    server.kill()
    server.wait_for(lambda: not transport.connected)
    server.start()
    server.wait_for(lambda: transport.connected)
    with pytest.raises(ConnectionChanged):
        transport.send(m.EpisodeClosed(episode=1), generation=old)


def test_waiting_request_fails_with_connection_lost_when_the_daemon_dies(server, transport):
    server.answer_requests = False
    transport.connect()
    threading.Timer(0.2, server.kill).start()
    with pytest.raises(ConnectionLost):
        transport.request(m.StatusQuery(request_id=transport.next_request_id()), timeout=5)


def test_close_stops_reconnecting(server, transport):
    transport.connect()
    transport.close()
    server.kill()
    server.start()
    time.sleep(0.3)
    assert not transport.connected
    assert len(server.clients) == 1


def test_a_daemon_that_rejects_the_reconnection_is_reported_once_and_not_retried(server, transport, capsys):
    transport.connect()
    server.kill()
    server.wait_for(lambda: not transport.connected)
    server.reject_reason = "this daemon was upgraded"
    server.start()
    server.wait_for(lambda: not transport.reconnecting, timeout=5)
    assert not transport.connected
    assert capsys.readouterr().err == "trace-live: the optimizer daemon rejected this process: this daemon was upgraded\n"


def test_a_send_stalled_past_the_send_timeout_drops_the_connection_and_reconnects(server, sock_path):
    t = Transport(sock_path, make_hello, send_timeout=0.3)
    try:
        t.connect()
        server.paused.set()  # the daemon stops reading
        big = m.EventBatch(episode=1, events=[["bulk", "x" * 1_000_000]])
        started = time.monotonic()
        with pytest.raises(NotConnected, match="send failed"):
            for _ in range(100):  # fills the socket buffers, then stalls
                t.send(big)
        assert time.monotonic() - started < 5
        server.wait_for(lambda: t.reconnects == 1 and t.connected, timeout=3)
    finally:
        server.paused.clear()
        t.close()
