"""Where the daemon listens and keeps its state, shared by the tracer and the daemon.

Both sides must agree on these paths without talking to each other first, so
they are derived only from the environment:

- socket: ``TRACE_DAEMON_SOCKET``, else ``daemon.sock`` in a per-user 0700
  directory: ``$XDG_RUNTIME_DIR/trace-live`` or, without a runtime dir,
  ``/tmp/trace-live-$UID``. Kept short on purpose: Unix socket paths are
  limited to ~107 bytes.
- state (database, status file, log, locks): ``TRACE_STATE_DIR``, else
  ``$XDG_STATE_HOME/trace-live`` or ``~/.local/state/trace-live``.

Both sides also need to tell whether a daemon owns these paths: the daemon
holds an exclusive ``flock`` on ``daemon.lock`` for its whole life (an
acquirable lock means no daemon, whatever pid the status file names), and
whoever starts one holds ``spawn.lock`` from "is one running?" until the new
daemon answers, so two processes never start two daemons. Functions here
never start anything.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SOCKET_ENV: Final = "TRACE_DAEMON_SOCKET"
STATE_DIR_ENV: Final = "TRACE_STATE_DIR"

# sun_path is 108 bytes on Linux and 104 on the BSDs/macOS, including the NUL.
MAX_SOCKET_PATH_BYTES: Final = 107 if sys.platform.startswith("linux") else 103

DATABASE_NAME: Final = "state.sqlite3"
STATUS_NAME: Final = "daemon.json"
LOG_NAME: Final = "daemon.log"
# Held (flock, exclusive) by the daemon for its whole life: acquirable == no daemon.
DAEMON_LOCK_NAME: Final = "daemon.lock"
# Held by whoever is starting a daemon, from "is one running?" until it answers.
SPAWN_LOCK_NAME: Final = "spawn.lock"


class LocationError(RuntimeError):
    """A daemon path cannot be used; the message says which and what to do."""


class SocketPathTooLong(LocationError):
    """The socket path does not fit in a Unix socket address."""


class InsecureDirectory(LocationError):
    """A private directory is owned by someone else or readable by others."""


@dataclass(frozen=True)
class Locations:
    """Every path the daemon and its clients use, resolved once."""

    socket: Path
    state_dir: Path

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_NAME

    @property
    def status_file(self) -> Path:
        return self.state_dir / STATUS_NAME

    @property
    def log_file(self) -> Path:
        return self.state_dir / LOG_NAME

    @property
    def daemon_lock(self) -> Path:
        return self.state_dir / DAEMON_LOCK_NAME

    @property
    def spawn_lock(self) -> Path:
        return self.state_dir / SPAWN_LOCK_NAME


def resolve(*, create: bool = True) -> Locations:
    """Return the socket and state paths for this user and environment.

    With ``create=True`` the directories are made (mode 0700). Raises
    `SocketPathTooLong` or `InsecureDirectory` with a message saying how to fix
    the environment.
    """
    return Locations(socket=socket_path(create=create), state_dir=state_dir(create=create))


def socket_path(*, create: bool = True) -> Path:
    """The daemon's Unix socket path (checked against the address length limit)."""
    configured = os.environ.get(SOCKET_ENV)
    if configured:
        path = Path(configured).expanduser().absolute()
        check_socket_path(path)
        if create:
            # Create a missing parent privately; an existing one is the user's choice.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path
    path = _runtime_dir(create=create) / "daemon.sock"
    check_socket_path(path)
    return path


def check_socket_path(path: Path) -> None:
    """Raise `SocketPathTooLong` if `path` cannot be bound as a Unix socket."""
    size = len(os.fsencode(str(path)))
    if size > MAX_SOCKET_PATH_BYTES:
        raise SocketPathTooLong(
            f"the daemon socket path {str(path)!r} is {size} bytes long, but Unix sockets "
            f"allow at most {MAX_SOCKET_PATH_BYTES}; set {SOCKET_ENV} to a shorter path "
            f"(e.g. /tmp/trace-live-{os.getuid()}/daemon.sock)"
        )


def state_dir(*, create: bool = True) -> Path:
    """The directory of the database, status file, log and locks."""
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        path = Path(configured).expanduser().absolute()
    else:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        path = Path(base).absolute() / "trace-live"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _runtime_dir(*, create: bool) -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        path = Path(runtime) / "trace-live"
    else:
        path = Path(tempfile.gettempdir()) / f"trace-live-{os.getuid()}"
    if create:
        ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path) -> None:
    """Create `path` mode 0700, or check that an existing one is ours and private.

    A shared /tmp lets another user pre-create our directory and read or
    hijack the socket, so an existing directory must be owned by us, be a real
    directory (not a symlink) and grant nothing to group or others.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise InsecureDirectory(f"{path} exists and is not a directory; remove it or set {SOCKET_ENV}")
    if info.st_uid != os.getuid():
        raise InsecureDirectory(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            f"remove it or set {SOCKET_ENV} to a path in a directory you own"
        )
    if info.st_mode & 0o077:
        raise InsecureDirectory(
            f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run 'chmod 700 {path}' or set {SOCKET_ENV}"
        )


def daemon_lock_held(locations: Locations) -> bool:
    """True if a live daemon holds the daemon lock of this state directory."""
    try:
        fd = os.open(locations.daemon_lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor also releases a lock we just took
    return False


def read_status(locations: Locations) -> dict[str, Any] | None:
    """The daemon's status file (pid, socket, database, ...), or None if absent or unreadable."""
    try:
        with open(locations.status_file, encoding="utf-8") as fh:
            status = json.load(fh)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


class FileLock:
    """An exclusive flock on `path`, taken with a deadline; released on close.

    Used as ``with FileLock(path, timeout) as acquired: ...``; `acquired` is
    False when the deadline passed first (never raises for contention).
    """

    def __init__(self, path: Path, timeout: float, poll: float = 0.02):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(self.poll)
                continue
            self.fd = fd
            return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
