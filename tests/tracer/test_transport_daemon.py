"""The transport against the real daemon process (`python -m optimizer_service serve`)."""
from __future__ import annotations

import os
import shutil
import signal
import threading

import pytest

from protocol import messages as m
from protocol.handshake import client_hello
from tests.daemon.support import DaemonEnv, short_tmpdir, stop_process, wait_until
from tracer.transport import Transport


@pytest.fixture
def env():
    root = short_tmpdir()
    yield DaemonEnv(socket=f"{root}/d.sock", state_dir=f"{root}/state")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def transport(env):
    t = Transport(env.socket, lambda: client_hello("tsession", client_name="transport-test"))
    yield t
    t.close()


def our_process(transport):
    status = transport.request(m.StatusQuery(request_id=transport.next_request_id()), timeout=5).status
    processes = [p for s in status["sessions"] if s["name"] == "tsession" for p in s["processes"]]
    return [p for p in processes if p["pid"] == os.getpid()], status["pid"]


def test_the_daemon_lists_this_process_in_its_session(env, transport):
    daemon = env.serve()
    try:
        welcome = transport.connect()
        assert welcome.session == "tsession" and welcome.daemon_pid == daemon.pid
        processes, _ = our_process(transport)
        assert [p["name"] for p in processes] == ["transport-test"]
    finally:
        stop_process(daemon)


def test_after_the_daemon_is_killed_and_restarted_the_transport_is_back(env, transport):
    daemon = env.serve()
    reconnected = threading.Event()
    transport.add_connect_listener(lambda welcome: reconnected.set())
    try:
        transport.connect()
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert wait_until(lambda: not transport.connected, 5)
        stop_process(daemon)
        daemon = env.serve()
        assert reconnected.wait(10)
        processes, daemon_pid = our_process(transport)
        assert daemon_pid == daemon.pid and len(processes) == 1
        assert transport.reconnects == 1
    finally:
        stop_process(daemon)
