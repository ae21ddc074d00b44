"""What the closing-the-loop tests share: a private daemon, the loopback LLM, and the real commands.

Every test runs the console scripts installed next to this interpreter
(`trace-run`, `trace-daemon`) in subprocesses, against a real daemon on a
real Unix socket in a temporary directory, with the LLM answered by
`tests.support.fake_llm.FakeLLMServer` through the real OpenAI/Anthropic SDKs.
Processes are stopped by their pid only.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.support.fake_llm import FakeLLMServer, RecordedRequest, Reply

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRACE_RUN = str(BIN / "trace-run")
TRACE_DAEMON = str(BIN / "trace-daemon")

# Variables the developer's shell may hold that would point a test at their
# daemon, their configuration or a real provider.
_FOREIGN_PREFIXES = ("TRACE_", "OPENAI_", "ANTHROPIC_")

_VARIABLE_LINE = re.compile(r"^\((?P<type>[^)]*)\) (?P<name>[A-Za-z_][\w.]*)(?P<sep>[=:])(?P<value>.*)$")


def optoprime_variables(prompt: str) -> list[tuple[str, str, str]]:
    """(type, name, first line of value) of each entry of the last #Variables section of an OptoPrime prompt."""
    section = prompt.rsplit("#Variables", 1)[-1].split("\n#", 1)[0]
    found = []
    for line in section.splitlines():
        match = _VARIABLE_LINE.match(line.strip())
        if match:
            found.append((match["type"], match["name"], match["value"]))
    return found


def is_optoprime_prompt(request: RecordedRequest) -> bool:
    text = request.prompt_text
    return "#Variables" in text and "#Feedback" in text


def optoprime_answer(suggestion: dict[str, Any]) -> Reply:
    """OptoPrime's JSON answer suggesting `suggestion` (TERMINATE when empty)."""
    if not suggestion:
        return Reply("TERMINATE")
    return Reply(json.dumps({"reasoning": "(scripted) follow the feedback.", "answer": "",
                             "suggestion": suggestion}))


def suggest_by_function(sources: dict[str, str]) -> Callable[[RecordedRequest], Reply]:
    """A responder that answers every OptoPrime prompt with `sources[function name]` for its code variables."""
    def respond(request: RecordedRequest) -> Reply:
        suggestion = {}
        for type_name, name, value in optoprime_variables(request.prompt_text):
            function = re.match(r"\s*def (\w+)", value)
            if type_name == "code" and function and function[1] in sources:
                suggestion[name] = sources[function[1]]
        return optoprime_answer(suggestion)
    return respond


def load_scripted_llm():
    """examples/scripted_llm.py as a module (the examples' responder)."""
    spec = importlib.util.spec_from_file_location("e2e_scripted_llm", REPO / "examples" / "scripted_llm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_files(directory: Path, files: dict[str, str]) -> None:
    """Write each dedented source under `directory`."""
    for name, source in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class LoopEnv:
    """A private daemon location, the loopback LLM, and the commands run against them.

    `root` is a short temporary directory (Unix socket paths are limited to
    ~107 bytes); the daemon's socket and state live in it. Both SDKs are
    pointed at `llm`; `provider` chooses which one TRACE_LLM names. The LLM
    answers with `answer(request)`, which a test sets before it runs a step
    (default: TERMINATE to OptoPrime, "OK" to anything else).
    """

    root: Path
    llm: FakeLLMServer | None = None
    provider: str = "openai"
    answer: Callable[[RecordedRequest], Reply] = field(
        default=lambda request: Reply("TERMINATE") if is_optoprime_prompt(request) else Reply("OK"))
    extra: dict[str, str] = field(default_factory=dict)
    daemon: subprocess.Popen | None = None
    _spawned: list[subprocess.Popen] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.root / "d.sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment of every command: this env's daemon and LLM, nothing of the developer's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
        env.update(TRACE_DAEMON_SOCKET=str(self.socket), TRACE_STATE_DIR=str(self.state_dir),
                   PYTHONUNBUFFERED="1")
        env.update(ANTHROPIC_BASE_URL=self.llm.anthropic_base_url, ANTHROPIC_API_KEY="test-key",
                   OPENAI_BASE_URL=self.llm.openai_base_url, OPENAI_API_KEY="test-key",
                   TRACE_LLM="anthropic:claude-test" if self.provider == "anthropic" else "openai:gpt-test")
        env.update(self.extra)
        env.update(extra)
        return env

    # -- the daemon ----------------------------------------------------------
    def start_daemon(self) -> subprocess.Popen:
        """`trace-daemon serve` in the foreground (its pid is ours to kill); returns once it answers."""
        log = open(self.root / "daemon.out", "ab")
        self.daemon = subprocess.Popen([TRACE_DAEMON, "serve"], env=self.environ(), stdout=log,
                                       stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        if not wait_until(lambda: self.socket.exists() and self.daemon_cli("status").returncode == 0
                          or self.daemon.poll() is not None, 30):
            raise AssertionError("the daemon did not answer within 30 s: " + self.daemon_log())
        if self.daemon.poll() is not None:
            raise AssertionError(f"the daemon exited {self.daemon.returncode}: " + self.daemon_log())
        return self.daemon

    def kill_daemon(self) -> None:
        """SIGKILL the daemon this env started (no clean shutdown at all)."""
        assert self.daemon is not None
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(10)

    def daemon_log(self) -> str:
        parts = []
        for path in (self.root / "daemon.out", self.state_dir / "daemon.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop_daemons(self) -> None:
        """Stop the daemon we started, and one a traced process started on demand, by pid."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)
        lock = self.state_dir / "daemon.lock"
        try:
            pid = int(lock.read_text().strip())
        except (OSError, ValueError):
            return
        if self.daemon is not None and pid == self.daemon.pid:
            return
        from protocol.locations import Locations, daemon_lock_held

        locations = Locations(socket=self.socket, state_dir=self.state_dir)
        if not daemon_lock_held(locations):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        if not wait_until(lambda: not daemon_lock_held(locations), 10):
            os.kill(pid, signal.SIGKILL)

    # -- commands ------------------------------------------------------------
    def daemon_cli(self, *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run `trace-daemon ARGS` (in `cwd`, default the env's root) to completion."""
        return subprocess.run([TRACE_DAEMON, *args], env=self.environ(), capture_output=True, text=True,
                              timeout=timeout, cwd=cwd or self.root)

    def trace_run(self, args: list[str], cwd: Path, *, timeout: float = 90,
                  **extra: str) -> subprocess.CompletedProcess:
        """Run `trace-run ARGS` to completion in `cwd`."""
        return subprocess.run([TRACE_RUN, *args], env=self.environ(**extra), capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)

    def spawn(self, command: list[str], cwd: Path, **extra: str) -> "Running":
        """Start `command` (e.g. [TRACE_RUN, ...]) with pipes for stdin/stdout/stderr; killed at teardown."""
        proc = subprocess.Popen(command, env=self.environ(**extra), cwd=cwd, text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._spawned.append(proc)
        return Running(proc)

    def stop_spawned(self) -> None:
        for proc in self._spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()

    def optoprime_requests(self) -> list[RecordedRequest]:
        """The requests the LLM got that were OptoPrime problem instances."""
        return [r for r in self.llm.requests if is_optoprime_prompt(r)]

    def cleanup(self) -> None:
        self.stop_spawned()
        self.stop_daemons()
        if self.llm is not None:
            self.llm.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def new_loop_env() -> LoopEnv:
    """A LoopEnv with its loopback LLM started (no daemon yet); call cleanup() when done."""
    env = LoopEnv(root=Path(tempfile.mkdtemp(prefix="tle-", dir="/tmp")))
    env.llm = FakeLLMServer(responder=lambda request: env.answer(request)).start()
    return env


class Running:
    """A started process whose stdout lines are read by a thread (so waiting for a line has a timeout)."""

    def __init__(self, proc: subprocess.Popen):
        import queue
        import threading

        self.proc = proc
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_line(self, timeout: float = 60) -> str:
        """The next stdout line; AssertionError (with what was seen and stderr) if none comes in time."""
        import queue

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no output line within {timeout} s after {self.seen}; "
                                 f"stderr: {self.proc.stderr.read()}") from None
        if line is None:
            self.proc.wait(10)
            raise AssertionError(f"process ended (exit {self.proc.returncode}) after {self.seen}; "
                                 f"stderr: {self.proc.stderr.read()}")
        self.seen.append(line)
        return line

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> tuple[list[str], str]:
        """Wait for the process; return its remaining stdout lines and its stderr."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"process did not finish within {timeout} s after {self.seen}; "
                                 f"stderr: {self.proc.stderr.read()}") from None
        self._reader.join(10)
        rest = []
        while True:
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                break
            rest.append(line)
        self.seen.extend(rest)
        return rest, self.proc.stderr.read()
