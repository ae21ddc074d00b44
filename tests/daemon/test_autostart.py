"""tracer.autostart.ensure_daemon: on-demand start, races, stale files, version mismatches."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon.support import REPO, Client, connectable, stop_process, wait_until
from tracer.autostart import ensure_daemon

FAKE_DAEMON = str(Path(__file__).with_name("fake_daemon.py"))


@pytest.fixture
def traced_env(env, monkeypatch):
    """The test process itself plays the traced process."""
    for key, value in env.environ().items():
        if key.startswith("TRACE_") or key == "PYTHONPATH":
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("TRACE_AUTOSTART", raising=False)
    return env


def daemon_pid(env) -> int:
    return int(Path(env.state_dir, "daemon.lock").read_text().strip())


def test_first_process_starts_the_daemon_and_the_next_finds_it(traced_env):
    first = ensure_daemon(timeout=15)
    assert first.ok and first.started and first.reason is None
    with Client(traced_env.socket, "s") as client:
        assert client.welcome.daemon_pid == first.pid == daemon_pid(traced_env)
    second = ensure_daemon(timeout=15)
    assert second.ok and not second.started and second.pid == first.pid


def test_disabled_autostart_returns_a_reason_and_starts_nothing(traced_env, monkeypatch):
    monkeypatch.setenv("TRACE_AUTOSTART", "0")
    result = ensure_daemon(timeout=2)
    assert not result.ok and "TRACE_AUTOSTART=0" in result.reason
    assert not connectable(traced_env.socket)


RACER = """
import sys, time, json
from tracer.autostart import ensure_daemon
go = float(sys.argv[1])
while time.time() < go:
    pass
r = ensure_daemon(timeout=20)
print(json.dumps({"ok": r.ok, "started": r.started, "pid": r.pid, "reason": r.reason}))
"""


def test_two_racing_autostarts_give_one_daemon(traced_env):
    go = str(time.time() + 1.0)
    racers = [subprocess.Popen([sys.executable, "-c", RACER, go], env=traced_env.environ(), cwd=REPO,
                               stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(r.communicate(timeout=60)[0]) for r in racers]
    assert all(r["ok"] for r in results), results
    assert sorted(r["started"] for r in results) == [False, True]
    assert results[0]["pid"] == results[1]["pid"] == daemon_pid(traced_env)
    log = Path(traced_env.state_dir, "daemon.log").read_text()
    assert log.count("serving on") == 1 and "already running" not in log


def test_stale_socket_and_status_file_of_a_dead_daemon_are_cleaned(traced_env):
    os.makedirs(traced_env.state_dir, mode=0o700)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(traced_env.socket)  # bound, never listening: what kill -9 leaves behind
    leftover.close()
    Path(traced_env.state_dir, "daemon.json").write_text(json.dumps({"pid": 999999, "socket": traced_env.socket}))
    result = ensure_daemon(timeout=15)
    assert result.ok and result.started, result.reason
    status = json.loads(Path(traced_env.state_dir, "daemon.json").read_text())
    assert status["pid"] == result.pid


def fake_daemon(env, major: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, FAKE_DAEMON, env.state_dir, env.socket, str(major)])
    assert wait_until(lambda: connectable(env.socket), 10)
    return proc


def test_daemon_of_an_older_protocol_is_stopped_and_replaced(traced_env):
    old = fake_daemon(traced_env, 0)
    try:
        result = ensure_daemon(timeout=15)
        assert result.ok and result.started, result.reason
        assert old.wait(5) == -15  # it was told to stop (SIGTERM)
        with Client(traced_env.socket, "s") as client:
            assert client.welcome.protocol[0] == 1
    finally:
        stop_process(old)


def test_daemon_of_a_newer_protocol_is_left_alone_and_refused_clearly(traced_env):
    newer = fake_daemon(traced_env, 2)
    try:
        result = ensure_daemon(timeout=5)
        assert not result.ok
        assert "daemon speaks protocol 2.0, this tracer 1.1" in result.reason and "upgrade" in result.reason
        assert newer.poll() is None
    finally:
        stop_process(newer)


def test_wait_is_bounded_when_another_starter_holds_the_spawn_lock(traced_env):
    from protocol.locations import FileLock
    os.makedirs(traced_env.state_dir, mode=0o700)
    with FileLock(Path(traced_env.state_dir, "spawn.lock"), 1):
        started = time.monotonic()
        result = ensure_daemon(timeout=0.5)
        assert time.monotonic() - started < 2
    assert not result.ok and "another process is starting" in result.reason


def test_a_bad_environment_comes_back_as_a_reason_not_an_exception(traced_env, monkeypatch):
    monkeypatch.setenv("TRACE_DAEMON_SOCKET", "/tmp/" + "x" * 200 + "/d.sock")
    result = ensure_daemon(timeout=1)
    assert not result.ok and "Unix sockets allow at most" in result.reason


def test_a_stopped_daemon_is_reported_at_once_instead_of_waited_for(traced_env, monkeypatch):
    # A daemon frozen with SIGSTOP holds its lock but never answers: a traced
    # program must not wait the whole autostart timeout before it runs.
    import signal

    from tracer import autostart

    first = ensure_daemon(timeout=15)
    assert first.ok
    monkeypatch.setattr(autostart, "_STARTING_GRACE_S", 0.0)  # it has been up "long enough"
    os.kill(first.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = ensure_daemon(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert not result.ok and "does not answer" in result.reason and str(first.pid) in result.reason
    assert elapsed < 2.0
