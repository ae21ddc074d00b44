"""Start the optimizer daemon on demand from a traced process.

The first traced process that finds no daemon starts one; every other
process finds it running. This runs inside user programs, so it never
raises (the result says what went wrong) and waits at most `timeout`.

How two processes starting at once still produce one daemon: a starter
takes the spawn lock (``spawn.lock`` in the state directory) before it
looks again and spawns; the daemon takes its own lock (``daemon.lock``) for
its whole life. The second starter gets the spawn lock only after the first
one's daemon answers, and then finds it. A daemon lock that can be taken
means no daemon, whatever pid or socket file was left behind: such files are
stale and removed.

A daemon that speaks an older major protocol version is told to stop
(SIGTERM) and replaced; a newer one is left alone (other programs use it)
and this process is told why it cannot be traced.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol import PROTOCOL_VERSION, FrameDecoder, ProtocolError, VersionMismatch, client_hello, encode_message
from protocol import messages as m
from protocol.locations import FileLock, Locations, daemon_lock_held, read_status, resolve

AUTOSTART_ENV: Final = "TRACE_AUTOSTART"
AUTH_TOKEN_ENV: Final = "TRACE_AUTH_TOKEN"
DEFAULT_TIMEOUT_S: Final = 5.0
_PROBE_TIMEOUT_S: Final = 0.5
_POLL_S: Final = 0.02
# A daemon that has been serving for longer than this and still does not
# answer a handshake is stopped (SIGSTOP) or wedged, not starting up:
# waiting for it would delay the program's start for the whole timeout.
_STARTING_GRACE_S: Final = 10.0


@dataclass
class AutostartResult:
    """Whether a compatible daemon answers now; if not, `reason` says why."""

    ok: bool
    socket: str | None = None
    started: bool = False            # this call spawned it
    pid: int | None = None           # the daemon's pid when known
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class _Probe:
    state: str                       # "ok", "absent", "older", "newer", "broken"
    detail: str = ""
    pid: int | None = None


def autostart_enabled() -> bool:
    return os.environ.get(AUTOSTART_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def ensure_daemon(timeout: float = DEFAULT_TIMEOUT_S) -> AutostartResult:
    """Make sure a daemon of this protocol version answers on the socket; start one if needed.

    Never raises: every failure comes back as ``AutostartResult(ok=False,
    reason=...)``. Returns within about `timeout` seconds.
    """
    try:
        return _ensure(timeout)
    except Exception as exc:  # this runs in user programs: report, never raise
        return AutostartResult(False, reason=f"could not start the optimizer daemon: {type(exc).__name__}: {exc}")


def _ensure(timeout: float) -> AutostartResult:
    deadline = time.monotonic() + timeout
    locations = resolve()
    sock = str(locations.socket)
    probe = _probe(sock)
    if probe.state == "ok":
        return AutostartResult(True, sock, pid=probe.pid)
    if probe.state == "newer":
        return AutostartResult(False, sock, reason=probe.detail)
    if not autostart_enabled():
        return AutostartResult(False, sock, reason=f"no optimizer daemon answers at {sock} ({probe.detail}) and "
                               f"starting one is disabled ({AUTOSTART_ENV}=0); run `trace-daemon start`")
    with FileLock(locations.spawn_lock, _remaining(deadline)) as acquired:
        if not acquired:
            return AutostartResult(False, sock, reason="another process is starting the optimizer daemon and it "
                                   f"did not answer within {timeout:g} s")
        probe = _probe(sock)  # someone may have started it while we waited for the lock
        if probe.state == "ok":
            return AutostartResult(True, sock, pid=probe.pid)
        if probe.state == "newer":
            return AutostartResult(False, sock, reason=probe.detail)
        if probe.state == "older":
            problem = _stop_old_daemon(locations, deadline)
            if problem:
                return AutostartResult(False, sock, reason=f"{probe.detail}; {problem}")
        elif daemon_lock_held(locations):
            status = read_status(locations) or {}
            started = status.get("started")
            if isinstance(started, (int, float)) and time.time() - started > _STARTING_GRACE_S:
                return AutostartResult(False, sock, pid=status.get("pid"), reason=(
                    f"the optimizer daemon (pid {status.get('pid', '?')}) is running but does not answer at "
                    f"{sock} ({probe.detail}); it may be stopped or overloaded: see `trace-daemon status`, "
                    "or restart it with `trace-daemon stop`"))
            # Alive but not answering yet (still starting): wait for it.
            return _wait_until_answering(sock, deadline, None, started=False)
        _remove_stale_files(locations)
        process = _spawn(locations)
        return _wait_until_answering(sock, deadline, process, started=True)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _probe(socket_path: str) -> _Probe:
    """Connect and handshake on a control connection; classify what answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_PROBE_TIMEOUT_S)
    try:
        try:
            sock.connect(socket_path)
        except OSError as exc:
            return _Probe("absent", f"nothing listens at {socket_path}: {exc.strerror or exc}")
        sock.sendall(encode_message(client_hello("", auth_token=os.environ.get(AUTH_TOKEN_ENV) or None,
                                                 client_name="trace-live-autostart")))
        decoder = FrameDecoder()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return _Probe("broken", f"the daemon at {socket_path} closed the connection during the handshake")
            messages = list(decoder.feed(chunk))
            if messages:
                break
    except VersionMismatch as exc:
        return _version_problem(exc.daemon_version)
    except (OSError, ProtocolError) as exc:
        return _Probe("broken", f"the process at {socket_path} does not answer like a daemon: {exc}")
    finally:
        sock.close()
    first = messages[0]
    if isinstance(first, m.Welcome):
        if first.protocol[0] != PROTOCOL_VERSION[0]:
            return _version_problem(tuple(first.protocol))
        return _Probe("ok", pid=first.daemon_pid)
    if isinstance(first, m.Reject):
        if first.protocol[0] != PROTOCOL_VERSION[0]:
            return _version_problem(tuple(first.protocol))
        return _Probe("broken", f"the daemon refused this process: {first.reason}")
    return _Probe("broken", f"the daemon answered the handshake with {type(first).__name__}")


def _version_problem(daemon_version: tuple) -> _Probe:
    text = str(VersionMismatch(daemon=tuple(daemon_version), tracer=PROTOCOL_VERSION))
    return _Probe("older" if daemon_version[0] < PROTOCOL_VERSION[0] else "newer", text)


def _stop_old_daemon(locations: Locations, deadline: float) -> str | None:
    """SIGTERM the daemon that holds the lock; wait until the lock is free."""
    pid = _lock_holder_pid(locations)
    if pid is None:
        return "cannot tell which process the old daemon is (no pid in its lock or status file)"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        return f"not allowed to stop the old daemon (pid {pid})"
    while daemon_lock_held(locations):
        if time.monotonic() >= deadline:
            return f"the old daemon (pid {pid}) did not stop in time; run `trace-daemon stop`"
        time.sleep(_POLL_S)
    return None


def _lock_holder_pid(locations: Locations) -> int | None:
    try:
        return int(locations.daemon_lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        status = read_status(locations) or {}
        pid = status.get("pid")
        return pid if isinstance(pid, int) else None


def _remove_stale_files(locations: Locations) -> None:
    """With the spawn lock held and no daemon lock held, leftovers belong to a dead daemon."""
    for path in (locations.socket, locations.status_file):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _spawn(locations: Locations) -> subprocess.Popen:
    env = dict(os.environ)
    # The daemon must not be traced itself (trace-run's child bootstrap is on
    # PYTHONPATH) and must find this installation's packages.
    package_root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and not p.rstrip("/").endswith(os.path.join("tracer", "bootstrap"))]
    env["PYTHONPATH"] = os.pathsep.join([package_root, *[p for p in paths if p != package_root]])
    env[AUTOSTART_ENV] = "0"
    with open(locations.log_file, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "optimizer_service", "serve", "--detached"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=locations.state_dir,
                                env=env, start_new_session=True, close_fds=True)


def _wait_until_answering(socket_path: str, deadline: float, process: subprocess.Popen | None, *,
                          started: bool) -> AutostartResult:
    while True:
        probe = _probe(socket_path)
        if probe.state == "ok":
            return AutostartResult(True, socket_path, started=started, pid=probe.pid)
        if probe.state in ("older", "newer"):
            return AutostartResult(False, socket_path, reason=probe.detail)
        if process is not None and process.poll() is not None:
            return AutostartResult(False, socket_path, reason=f"the optimizer daemon exited with status "
                                   f"{process.returncode} while starting; see its log")
        if time.monotonic() >= deadline:
            return AutostartResult(False, socket_path, started=started,
                                   reason=f"the optimizer daemon did not answer at {socket_path} in time")
        time.sleep(_POLL_S)
