"""Run the daemon in this process until it is stopped (`trace-daemon serve`).

Order matters and is what makes start-up race-free:

1. take the daemon lock (flock on ``daemon.lock``, held until exit): if it
   is taken, another daemon owns this state directory and we leave;
2. open the database (migrations), load the optimizer factory;
3. remove a stale socket file (only now: with the lock held, no live daemon
   of ours can be behind it; a socket something else answers on is refused);
4. bind, then write the status file: a client that sees the status file can
   connect.

On SIGTERM/SIGINT or a `stop` request the socket and status file are
removed and the lock released. After ``kill -9`` they stay behind; the
next start recognises them as stale because the lock is free.
"""
from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from protocol import DEFAULT_MAX_FRAME, PROTOCOL_VERSION
from protocol.locations import Locations
from optimizer_service.optimizers import load_factory
from optimizer_service.server import DaemonServer
from optimizer_service.sessions import Limits, SessionManager
from optimizer_service.store import Store

log = logging.getLogger("optimizer_service")

STEP_WORKERS: Final = 2
GC_THRESHOLD_GEN0: Final = 50_000
# Optional shared secret: when the daemon has one, every Hello must carry it.
AUTH_TOKEN_ENV: Final = "TRACE_AUTH_TOKEN"
LOG_MAX_BYTES: Final = 5 * 1024 * 1024


class DaemonStartError(RuntimeError):
    """The daemon cannot start; the message says why and what to do."""


class AlreadyRunning(DaemonStartError):
    """Another daemon holds the lock of this state directory."""


class SocketInUse(DaemonStartError):
    """Something else answers on the socket path."""


def run_daemon(locations: Locations, *, optimizer: str | None = None, max_frame_size: int = DEFAULT_MAX_FRAME,
               log_to_stderr: bool = True, limits: Limits | None = None) -> int:
    """Serve until stopped; return the exit status. Raises DaemonStartError before serving."""
    lock_fd = _take_daemon_lock(locations)
    try:
        _setup_logging(locations.log_file, log_to_stderr)
        _tune_gc()
        store = Store(locations.database)
        factory = load_factory(optimizer)
        _remove_stale_socket(locations.socket)
        executor = ThreadPoolExecutor(max_workers=STEP_WORKERS, thread_name_prefix="trace-step")
        manager = SessionManager(store, executor, factory, limits)
        server = DaemonServer(manager, socket_path=str(locations.socket), database=str(locations.database),
                              log_file=str(locations.log_file), state_dir=str(locations.state_dir),
                              max_frame_size=max_frame_size,
                              auth_token=os.environ.get(AUTH_TOKEN_ENV) or None)
        try:
            asyncio.run(_serve(server, locations))
        finally:
            _remove_own_files(locations)
            executor.shutdown(wait=False, cancel_futures=True)
            log.info("daemon %d stopped", os.getpid())
        # A step stuck in an LLM call must not keep a stopped daemon alive.
        if any(t.name.startswith("trace-step") and t.is_alive() for t in threading.enumerate()):
            logging.shutdown()
            os._exit(0)
        return 0
    finally:
        os.close(lock_fd)


async def _serve(server: DaemonServer, locations: Locations) -> None:
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    _write_status(locations, server)
    log.info("daemon %d serving on %s (database %s)", os.getpid(), locations.socket, locations.database)
    await server.serve()


def _tune_gc() -> None:
    """Collect cycles less often: ingest allocates millions of small, acyclic containers.

    Every decoded event is a list (often holding a dict) that lives in its
    episode until released. With CPython's default thresholds (700, 10, 10)
    the collector runs every few hundred allocations and keeps rescanning all
    retained events; measured on 1000-event frames, that made decoding 5x
    slower (256k instead of 1.2M events/s). Reference counting still frees
    everything at once; only garbage cycles wait a little longer.
    """
    gc.freeze()  # what start-up imported is permanent: never scan it again
    gc.set_threshold(GC_THRESHOLD_GEN0, 20, 100)


def _take_daemon_lock(locations: Locations) -> int:
    fd = os.open(locations.daemon_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"a daemon (pid {holder}) is already running for {locations.state_dir}; "
            f"stop it with `trace-daemon stop` or set TRACE_STATE_DIR to another directory"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def _remove_stale_socket(path: Path) -> None:
    if not os.path.lexists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError:
        os.unlink(path)  # nobody listens: left behind by a daemon that died
        log.info("removed stale socket %s", path)
        return
    finally:
        probe.close()
    raise SocketInUse(
        f"another process is listening on {path} (a daemon with a different TRACE_STATE_DIR?); "
        f"stop it or set TRACE_DAEMON_SOCKET to another path"
    )


def _write_status(locations: Locations, server: DaemonServer) -> None:
    status = {
        "pid": os.getpid(), "socket": str(locations.socket), "database": str(locations.database),
        "log": str(locations.log_file), "state_dir": str(locations.state_dir), "started": server.started,
        "protocol": list(PROTOCOL_VERSION), "python": sys.executable,
    }
    tmp = locations.status_file.with_name(f".{locations.status_file.name}.{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, locations.status_file)


def _remove_own_files(locations: Locations) -> None:
    try:
        status = json.loads(locations.status_file.read_text(encoding="utf-8"))
        if status.get("pid") == os.getpid():
            locations.status_file.unlink()
    except (OSError, ValueError):
        pass
    try:
        os.unlink(locations.socket)
    except OSError:
        pass


def _setup_logging(log_file: Path, to_stderr: bool) -> None:
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
    formatter = logging.Formatter("%(asctime)sZ %(process)d %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.gmtime
    file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=LOG_MAX_BYTES, backupCount=2,
                                                        encoding="utf-8")
    file_handler.setFormatter(formatter)
    log.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("trace-daemon: %(message)s"))
        log.addHandler(stream)
