"""Start and stop a daemon from another process (`trace-daemon start|stop`).

Starting takes the spawn lock first, so two starters (two CLI calls, or a
CLI call racing a traced process's autostart) never spawn two daemons: the
second one finds the first one's daemon when it gets the lock. The daemon
is spawned with ``Popen(start_new_session=True)`` (its own session: a
Ctrl-C in the terminal that started it does not reach it; no double fork,
which is unsafe in a multithreaded parent).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.locations import FileLock, Locations, daemon_lock_held, read_status
from optimizer_service.client import AdminClient, CommandFailed, DaemonNotRunning
from optimizer_service.daemon import DaemonStartError


@dataclass
class StartResult:
    pid: int | None
    started: bool             # False: one was already running


def daemon_pid(locations: Locations) -> int | None:
    """The pid the running daemon wrote into its lock file (None if no daemon holds it)."""
    if not daemon_lock_held(locations):
        return None
    try:
        return int(locations.daemon_lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        status = read_status(locations)
        return status.get("pid") if status else None


def spawn_command(optimizer: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "optimizer_service", "serve", "--detached"]
    if optimizer:
        command += ["--optimizer", optimizer]
    return command


def _answers(socket_path: Path) -> bool:
    try:
        with AdminClient(str(socket_path), timeout=1.0):
            return True
    except (DaemonNotRunning, CommandFailed, OSError):
        return False


def start_daemon(locations: Locations, *, timeout: float = 15.0, optimizer: str | None = None) -> StartResult:
    """Start a detached daemon unless one is running; wait until it answers."""
    deadline = time.monotonic() + timeout
    with FileLock(locations.spawn_lock, timeout) as acquired:
        if not acquired:
            raise DaemonStartError(f"another process kept {locations.spawn_lock} locked for {timeout:g} s "
                                   f"while starting a daemon; try again")
        if daemon_lock_held(locations):
            while not _answers(locations.socket):
                if time.monotonic() > deadline:
                    raise DaemonStartError(
                        f"a daemon (pid {daemon_pid(locations)}) holds {locations.daemon_lock} but does not "
                        f"answer at {locations.socket}; see {locations.log_file}")
                time.sleep(0.05)
            return StartResult(daemon_pid(locations), started=False)
        with open(locations.log_file, "ab") as log:
            process = subprocess.Popen(spawn_command(optimizer), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=log, start_new_session=True, cwd=locations.state_dir)
        while not _answers(locations.socket):
            if process.poll() is not None:
                raise DaemonStartError(f"the daemon exited with status {process.returncode} while starting: "
                                       f"{_log_tail(locations.log_file)}")
            if time.monotonic() > deadline:
                raise DaemonStartError(f"the daemon (pid {process.pid}) did not answer within {timeout:g} s; "
                                       f"see {locations.log_file}")
            time.sleep(0.05)
        return StartResult(process.pid, started=True)


def stop_daemon(locations: Locations, *, timeout: float = 10.0) -> int:
    """Ask the daemon to stop (SIGTERM, then SIGKILL, if it does not answer); return its pid."""
    pid = daemon_pid(locations)
    if pid is None:
        raise DaemonNotRunning(f"no daemon is running for {locations.state_dir}")
    try:
        with AdminClient(str(locations.socket), timeout=2.0) as client:
            client.request("stop")
    except (DaemonNotRunning, CommandFailed, OSError):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while daemon_lock_held(locations):
        if time.monotonic() > deadline:
            _signal(pid, signal.SIGKILL)
            time.sleep(0.2)
            break
        time.sleep(0.05)
    return pid


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
