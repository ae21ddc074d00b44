"""The optimizer service inside the traced process (`trace-run --in-process`).

The same server, sessions and step pipeline as the daemon, on an event loop
in a background thread, listening on a private socket in a fresh temporary
directory: the tracer connects to it exactly as to a daemon. State goes to
the usual database (TRACE_STATE_DIR), so sessions continue across runs and
`trace-daemon` commands can read the history afterwards.

Unlike the daemon it takes no daemon lock (a daemon may serve other
programs at the same time; SQLite's WAL lets both write), installs no
signal handlers, and leaves the program's GC settings alone.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from protocol import DEFAULT_MAX_FRAME
from protocol.locations import state_dir
from optimizer_service.optimizers import load_factory
from optimizer_service.server import DaemonServer
from optimizer_service.sessions import SessionManager
from optimizer_service.store import Store

log = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 10.0
IN_PROCESS_LOG: Final = "in-process.log"


class InProcessStartError(RuntimeError):
    """The in-process service could not start; the message says why."""


class InProcessService:
    """A running in-process service; `socket_path` is where to connect, `stop()` ends it."""

    def __init__(self, *, optimizer: str | None = None):
        self._dir = Path(tempfile.mkdtemp(prefix="trace-live-"))  # mkdtemp makes it 0700
        self.socket_path = str(self._dir / "s.sock")
        state = state_dir()
        _log_to_file(state / IN_PROCESS_LOG)
        self.store = Store(state / "state.sqlite3")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-step")
        manager = SessionManager(self.store, self._executor, load_factory(optimizer))
        self.server = DaemonServer(manager, socket_path=self.socket_path, database=str(self.store.path),
                                   log_file=str(state / IN_PROCESS_LOG), state_dir=str(state), max_frame_size=DEFAULT_MAX_FRAME,
                                   auth_token=os.environ.get("TRACE_AUTH_TOKEN") or None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trace-live-optimizer", daemon=True)

    def start(self, timeout: float = START_TIMEOUT_S) -> "InProcessService":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise InProcessStartError(f"the in-process optimizer did not start within {timeout:g} s")
        if self._failure is not None:
            raise InProcessStartError(f"the in-process optimizer failed to start: {self._failure}") from self._failure
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); this thread must not die noisily
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.server.start()
        self._ready.set()
        await self.server.serve()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, wait for the thread, remove the socket directory (idempotent)."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(self.server.stop)
            self._thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._dir, ignore_errors=True)


def _log_to_file(path: Path) -> None:
    """Send the service's log records to its own file, never into the program's logging.

    The program may have configured the root logger (basicConfig): our
    records must not appear in its output.
    """
    logger = logging.getLogger("optimizer_service")
    logger.propagate = False
    for old in [h for h in logger.handlers if getattr(h, "trace_live_in_process", False)]:
        logger.removeHandler(old)  # a service started earlier in this process, maybe another state dir
        old.close()
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.trace_live_in_process = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def start_in_process(optimizer: str | None = None) -> InProcessService:
    """Start the service in a background thread of this process and return it once it listens."""
    return InProcessService(optimizer=optimizer).start()
