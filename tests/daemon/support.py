"""Helpers for daemon tests: a real daemon process and small protocol clients."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import FrameDecoder, client_hello, encode_message
from protocol import messages as m

REPO = Path(__file__).resolve().parents[2]
SCRIPTED = "tests.daemon.scripted_optimizer:factory"


def short_tmpdir() -> str:
    """A fresh directory with a path short enough for a Unix socket."""
    return tempfile.mkdtemp(prefix="tdm-", dir="/tmp")


@dataclass
class DaemonEnv:
    socket: str
    state_dir: str
    extra: dict[str, str] = field(default_factory=dict)   # more variables for every process started

    def environ(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(TRACE_DAEMON_SOCKET=self.socket, TRACE_STATE_DIR=self.state_dir,
                   PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   TRACE_OPTIMIZER=SCRIPTED)
        env.update(self.extra)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 30, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "optimizer_service", *args], env=self.environ(**extra),
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def serve(self, *args: str) -> subprocess.Popen:
        """Start `trace-daemon serve` in the foreground and wait until it answers."""
        proc = subprocess.Popen([sys.executable, "-m", "optimizer_service", "serve", *args],
                                env=self.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        wait_until(lambda: connectable(self.socket) or proc.poll() is not None, 20)
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read().decode()}")
        return proc


def connectable(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


class Client:
    """A blocking protocol client standing in for a traced process."""

    def __init__(self, socket_path: str, session: str = "", *, name: str = "test", hello: m.Hello | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(socket_path)
        self.decoder = FrameDecoder()
        self.inbox: list[Any] = []
        self.request_ids = iter(range(1, 1 << 30))
        self.send(hello or client_hello(session, client_name=name))
        self.welcome = self.expect((m.Welcome, m.Reject))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, message: Any) -> None:
        self.sock.sendall(encode_message(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        if not chunk:
            return False
        self.inbox.extend(self.decoder.feed(chunk))
        return True

    def expect(self, kinds: Any, timeout: float = 10.0, where=None) -> Any:
        """The first received message of type `kinds` (others stay in the inbox)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.inbox):
                if isinstance(msg, kinds) and (where is None or where(msg)):
                    return self.inbox.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kinds} within {timeout} s; inbox: {self.inbox}")
            if not self._read(min(remaining, 0.2)):
                for i, msg in enumerate(self.inbox):
                    if isinstance(msg, kinds):
                        return self.inbox.pop(i)
                raise ConnectionError(f"connection closed while waiting for {kinds}; inbox: {self.inbox}")

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._read(0.2):
                    return True
            except OSError:
                return True
        return False

    def request(self, command: str, **args: Any) -> m.Reply:
        rid = next(self.request_ids)
        self.send(m.Request(request_id=rid, command=command, args=args))
        return self.expect(m.Reply, where=lambda r: r.request_id == rid)

    def status(self) -> dict:
        rid = next(self.request_ids)
        self.send(m.StatusQuery(request_id=rid))
        return self.expect(m.StatusReply, where=lambda r: r.request_id == rid).status

    def step(self, timeout: float = 30, **options: Any) -> m.StepDone:
        rid = next(self.request_ids)
        self.send(m.StepRequest(request_id=rid, options=options))
        return self.expect(m.StepDone, timeout, where=lambda r: r.request_id == rid)

    def run_episode(self, episode: int, prompt: str, output: str = "out", *, param: str = "prompt") -> int:
        """Send definitions and one call's events: param value -> f() -> output; return the output node."""
        self.send(m.Definitions(
            functions=[m.FunctionDef(id=7, module="app", qualname="answer", source="def answer(q): ...",
                                     doc=None, signature="(q)", file="app.py", line=1, trainable=False)],
            params=[m.ParamDef(name=param, type="str", value=prompt, kind="global", where="app:PROMPT")]))
        base = episode * 10
        self.send(m.EventBatch(episode=episode, events=[
            ["v", base + 1, {"t": "str", "id": 1, "v": prompt}],
            ["param", base + 1, param],
            ["call", base + 2, 7, None, [["q", base + 1]], 1, 0],
            ["v", base + 3, {"t": "str", "id": 2, "v": output}],
            ["ret", base + 2, base + 3, 1],
        ]))
        return base + 3

    def close(self) -> None:
        self.sock.close()
