import os
import shutil
import signal
from pathlib import Path

import pytest

from protocol.locations import Locations, daemon_lock_held
from tests.daemon.support import DaemonEnv, short_tmpdir, stop_process, wait_until


@pytest.fixture
def env():
    """TRACE_DAEMON_SOCKET / TRACE_STATE_DIR in a fresh short temporary directory."""
    root = short_tmpdir()
    env = DaemonEnv(socket=f"{root}/d.sock", state_dir=f"{root}/state")
    yield env
    stop_detached_daemon(env)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(env):
    """A real daemon process (scripted optimizer) serving `env`; stopped afterwards."""
    proc = env.serve()
    yield proc
    stop_process(proc)


def stop_detached_daemon(env: DaemonEnv) -> None:
    """Stop a daemon a test started in the background (start, autostart), by its pid."""
    locations = Locations(socket=Path(env.socket), state_dir=Path(env.state_dir))
    if not locations.state_dir.exists() or not daemon_lock_held(locations):
        return
    try:
        pid = int(locations.daemon_lock.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    if not wait_until(lambda: not daemon_lock_held(locations), 10):
        os.kill(pid, signal.SIGKILL)
