"""protocol.locations: where the socket and the state live."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from protocol import locations
from protocol.locations import FileLock, InsecureDirectory, SocketPathTooLong, resolve


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("TRACE_DAEMON_SOCKET", "TRACE_STATE_DIR", "XDG_RUNTIME_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_environment_variables_choose_socket_and_state_dir(clean_env, monkeypatch):
    monkeypatch.setenv("TRACE_DAEMON_SOCKET", str(clean_env / "run" / "d.sock"))
    monkeypatch.setenv("TRACE_STATE_DIR", str(clean_env / "st"))
    loc = resolve()
    assert loc.socket == clean_env / "run" / "d.sock" and loc.state_dir == clean_env / "st"
    assert loc.database == clean_env / "st" / "state.sqlite3" and loc.status_file.name == "daemon.json"
    assert stat.S_IMODE(os.stat(clean_env / "st").st_mode) == 0o700


def test_default_socket_is_in_a_private_dir_under_xdg_runtime_dir(clean_env, monkeypatch):
    runtime = clean_env / "xdg"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    loc = resolve()
    assert loc.socket == runtime / "trace-live" / "daemon.sock"
    assert stat.S_IMODE(os.stat(runtime / "trace-live").st_mode) == 0o700


def test_default_state_dir_follows_xdg_state_home_then_home(clean_env, monkeypatch):
    assert locations.state_dir(create=False) == clean_env / "home" / ".local" / "state" / "trace-live"
    monkeypatch.setenv("XDG_STATE_HOME", str(clean_env / "xs"))
    assert locations.state_dir(create=False) == clean_env / "xs" / "trace-live"


def test_without_runtime_dir_the_socket_goes_to_tmp_per_uid(clean_env):
    path = locations.socket_path(create=False)
    assert path.parent.name == f"trace-live-{os.getuid()}"


def test_too_long_socket_path_is_a_clear_error_and_creates_nothing(clean_env, monkeypatch):
    long_dir = clean_env / ("d" * 120)
    monkeypatch.setenv("TRACE_DAEMON_SOCKET", str(long_dir / "daemon.sock"))
    with pytest.raises(SocketPathTooLong, match="Unix sockets allow at most 10[37]; set TRACE_DAEMON_SOCKET"):
        resolve()
    assert not long_dir.exists()


def test_private_dir_open_to_others_is_refused(clean_env, monkeypatch):
    runtime = clean_env / "xdg"
    (runtime / "trace-live").mkdir(parents=True)
    os.chmod(runtime / "trace-live", 0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with pytest.raises(InsecureDirectory, match="chmod 700"):
        resolve()


def test_file_lock_times_out_instead_of_blocking(tmp_path):
    path = tmp_path / "x.lock"
    with FileLock(path, 1) as first:
        assert first
        with FileLock(path, 0.1) as second:
            assert not second
    with FileLock(Path(path), 0.1) as again:
        assert again
