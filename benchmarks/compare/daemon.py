"""A private optimizer daemon for our side of the comparison.

Each group of our-side measurements gets its own `trace-daemon serve` with
its socket and state in a fresh temporary directory, so the comparison
never touches a user's daemon and every figure starts from an empty
database. The daemon's LLM is the loopback server.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.compare.commands import project_command

READY_TIMEOUT_S = 30.0


class DaemonFailed(RuntimeError):
    """The daemon did not start (its output is in the message)."""


class PrivateDaemon:
    """`with PrivateDaemon(python, llm_env) as daemon:` -> daemon.env for trace-run programs."""

    def __init__(self, python: str, llm_env: dict[str, str]):
        self.python = python
        # Short path: a Unix socket path must stay under ~100 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="tlcmp-"))
        self.socket = self.directory / "daemon.sock"
        self.state_dir = self.directory / "state"
        self.env = dict(os.environ)
        self.env.update(llm_env)
        self.env.update({
            "TRACE_DAEMON_SOCKET": str(self.socket),
            "TRACE_STATE_DIR": str(self.state_dir),
            "TRACE_AUTOSTART": "0",
        })
        self.process: subprocess.Popen | None = None
        self._log = self.directory / "daemon.log"

    def __enter__(self) -> "PrivateDaemon":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        command = project_command(self.python, "trace-daemon", "optimizer_service.cli") + ["serve"]
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = f"{' '.join(command)} exited with {self.process.returncode}:\n{self.log_tail()}"
                self.stop()
                raise DaemonFailed(message)
            if self._answers():
                return
            time.sleep(0.05)
        message = (f"{' '.join(command)} did not listen on {self.socket} within "
                   f"{READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
        self.stop()
        raise DaemonFailed(message)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def rss_bytes(self) -> int | None:
        """The daemon's resident memory now (Linux), or None."""
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/statm", encoding="ascii") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the daemon removes its socket and status file
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
