"""The runtime in a real traced process: start-up, tracing off, patches, reconnects, fork, exit.

Each test runs a small program in a fresh interpreter (the runtime is
process-wide state, and fork/atexit need a process of their own) against a
protocol-speaking server on a Unix socket in a temporary directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from protocol import messages as m
from tests.tracer.test_transport_server import ProtocolServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The prologue every program starts with: tracing starts before its first line.
PROLOGUE = """\
import json, os, sys, time
from tracer import runtime
_t0 = time.perf_counter()
_options = dict(session="sess", autostart=False, connect_timeout=0.5)
_options.update(dict({start_args}))
runtime.start(runtime.RuntimeConfig(**_options))
_startup = time.perf_counter() - _t0
def report(**values):
    with open(os.environ["REPORT_FILE"], "a") as f:
        f.write(json.dumps(values) + "\\n")
report(startup=_startup)
"""


@pytest.fixture
def workdir():
    # Short: Unix socket paths are limited to ~107 bytes.
    return tempfile.mkdtemp(prefix="tl-")


@pytest.fixture
def sock_path(workdir):
    return os.path.join(workdir, "d.sock")


@pytest.fixture
def server(sock_path):
    with ProtocolServer(sock_path) as srv:
        yield srv


class Program:
    """A program run (or running) under the runtime, and what it reported."""

    def __init__(self, workdir, sock_path, body, env=None, start_args=""):
        self.report_file = os.path.join(workdir, f"report-{time.monotonic_ns()}.jsonl")
        path = os.path.join(workdir, "prog.py")
        with open(path, "w") as f:
            f.write(PROLOGUE.format(start_args=start_args) + textwrap.dedent(body))
        self.env = dict(os.environ, TRACE_DAEMON_SOCKET=sock_path, TRACE_STATE_DIR=workdir,
                        TRACE_AUTOSTART="0", REPORT_FILE=self.report_file,
                        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
        self.env.update(env or {})
        self.args = [sys.executable, path]

    def run(self, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(self.args, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.PIPE, text=True, cwd=REPO)

    def reports(self) -> dict:
        merged: dict = {}
        if os.path.exists(self.report_file):
            with open(self.report_file) as f:
                for line in f:
                    merged.update(json.loads(line))
        return merged


def run(workdir, sock_path, body, **kwargs):
    program = Program(workdir, sock_path, body, **kwargs)
    return program.run(), program.reports()


def tracer_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("trace-live:")]


def called_funcs(server, client=None):
    return [e[2] for b in server.messages(m.EventBatch, client=client) for e in b.events if e[0] == "call"]


# -- start-up ----------------------------------------------------------------

def test_connected_program_sends_hello_definitions_and_events(server, workdir, sock_path):
    done, reports = run(workdir, sock_path, """
        from tracer import marking
        @marking.bundle()
        def double(x):
            return x * 2
        print(double(21))
        runtime.flush(5)
        report(connected=runtime.is_connected(), stats=runtime.stats().__dict__)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42\n" and tracer_lines(done.stderr) == []
    assert reports["connected"] is True
    stats = reports["stats"]
    assert stats["events_sent"] >= 2 and stats["bytes_sent"] > 0 and stats["dropped"] == 0
    assert stats["session"] == "sess" and stats["client_id"] == 1
    hello = server.clients[0].hello
    assert hello.session == "sess" and hello.argv[0].endswith("prog.py") and hello.pid != os.getpid()
    # the server reads frames on its own thread: the program may exit before it has
    server.wait_for(lambda: server.messages(m.Definitions) and called_funcs(server))
    functions = [f.qualname for d in server.messages(m.Definitions) for f in d.functions]
    assert functions == ["double"]
    assert len(called_funcs(server)) == 1


def test_auth_token_from_the_environment_is_sent(server, workdir, sock_path):
    done, _ = run(workdir, sock_path, "", env={"TRACE_AUTH_TOKEN": "tok-123"})
    assert done.returncode == 0, done.stderr
    assert server.clients[0].hello.auth_token == "tok-123"


def test_without_a_daemon_one_stderr_line_says_tracing_is_off_and_output_is_unchanged(workdir, sock_path):
    done, reports = run(workdir, sock_path, """
        from tracer import marking
        @marking.bundle()
        def double(x):
            return x * 2
        print(double(21))
        print("err", file=sys.stderr)
        report(connected=runtime.is_connected(), stats=runtime.stats().tracing_off_reason)
    """)
    assert done.returncode == 0
    assert done.stdout == "42\n"
    lines = done.stderr.splitlines()
    assert lines[-1] == "err" and len(lines) == 2
    assert lines[0].startswith("trace-live: tracing is off: no optimizer daemon is listening at ")
    assert sock_path in lines[0] and "trace-daemon start" in lines[0]
    assert reports["connected"] is False and sock_path in reports["stats"]


def test_without_a_daemon_startup_is_delayed_a_fraction_of_a_second_at_most(workdir, sock_path):
    _, reports = run(workdir, sock_path, "")
    assert reports["startup"] < 0.5


def test_a_silent_daemon_delays_startup_only_by_the_connect_timeout(workdir, sock_path):
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(8)
    try:
        done, reports = run(workdir, sock_path, "print('ran')")
    finally:
        listener.close()
    assert done.stdout == "ran\n"
    assert 0.4 <= reports["startup"] < 1.5
    assert "did not answer the handshake" in tracer_lines(done.stderr)[0]


def test_rejected_process_shows_the_reason_once_and_runs_normally(server, workdir, sock_path):
    server.reject_reason = "session 'sess' is closed"
    done, reports = run(workdir, sock_path, """
        print("still runs")
        report(connected=runtime.is_connected())
    """)
    assert done.returncode == 0 and done.stdout == "still runs\n"
    assert tracer_lines(done.stderr) == [
        "trace-live: tracing is off: the optimizer daemon rejected this process: session 'sess' is closed"
    ]
    assert reports["connected"] is False


def test_api_calls_while_tracing_is_off_raise_not_connected(workdir, sock_path):
    done, reports = run(workdir, sock_path, """
        from tracer.errors import NotConnected
        try:
            runtime.new_episode()
        except NotConnected as exc:
            report(error=str(exc))
    """)
    assert done.returncode == 0
    assert reports["error"].startswith("tracing is off: no optimizer daemon")


# -- patches -----------------------------------------------------------------

def test_the_sessions_latest_patch_is_applied_before_the_first_line(server, workdir, sock_path):
    server.session_version = 3
    server.initial_patch = m.Patch(version=3, items=[m.PatchItem(name="greeting", kind="value", value="hello, patched")])
    done, reports = run(workdir, sock_path, """
        import tracer
        GREETING = tracer.param("hello", name="greeting")
        print(GREETING)
        report(applied=runtime.applied_version())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello, patched\n"
    assert reports["applied"] == 3
    (ack,) = server.wait_for(lambda: server.messages(m.PatchAck))
    assert ack.version == 3 and [(r.name, r.ok) for r in ack.results] == [("greeting", True)]


def test_a_patch_arriving_mid_run_is_applied_and_acknowledged(server, workdir, sock_path):
    program = Program(workdir, sock_path, """
        import tracer
        LIMIT = tracer.param(10, name="limit")
        heard = []
        runtime.add_patch_listener(lambda patch, results: heard.append(patch.version))
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        results = runtime.wait_for_patch(5, timeout=10)
        report(limit=LIMIT, results=[[r.name, r.ok] for r in results], heard=heard)
    """)
    process = program.start()
    try:
        assert process.stdout.readline() == "ready\n"
        server.send_to_all(m.Patch(version=5, items=[m.PatchItem(name="limit", kind="value", value=25)]))
        process.wait(20)
    finally:
        process.kill()
    reports = program.reports()
    assert (reports["limit"], reports["results"], reports["heard"]) == (25, [["limit", True]], [5])
    assert server.wait_for(lambda: server.messages(m.PatchAck))[0].results[0].ok


def test_a_patch_that_cannot_apply_is_acknowledged_with_the_reason(server, workdir, sock_path):
    program = Program(workdir, sock_path, """
        import tracer
        LIMIT = tracer.param(10, name="limit")
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        runtime.wait_for_patch(6, timeout=10)
        report(limit=LIMIT)
    """)
    process = program.start()
    try:
        assert process.stdout.readline() == "ready\n"
        server.send_to_all(m.Patch(version=6, items=[m.PatchItem(name="limit", kind="value", value="not a number")]))
        process.wait(20)
    finally:
        process.kill()
    assert program.reports()["limit"] == 10
    (result,) = server.wait_for(lambda: server.messages(m.PatchAck))[0].results
    assert not result.ok and result.error


# -- reconnect, fork, exit -----------------------------------------------------

def test_daemon_restart_mid_run_reconnects_and_resends_definitions(server, workdir, sock_path):
    program = Program(workdir, sock_path, """
        from tracer import marking
        @marking.bundle()
        def step(i):
            return i + 1
        for line in sys.stdin:
            print(step(int(line)), flush=True)
            runtime.flush(5)
        report(stats=runtime.stats().__dict__)
    """)
    process = program.start()
    try:
        process.stdin.write("1\n"); process.stdin.flush()
        assert process.stdout.readline() == "2\n"
        server.wait_for(lambda: called_funcs(server, client=1))
        server.kill()
        process.stdin.write("2\n"); process.stdin.flush()
        assert process.stdout.readline() == "3\n"  # the program runs on without a daemon
        server.start()
        server.wait_for(lambda: len(server.clients) == 2, timeout=10)
        process.stdin.write("3\n"); process.stdin.flush()
        assert process.stdout.readline() == "4\n"
        server.wait_for(lambda: called_funcs(server, client=2), timeout=10)
        process.stdin.close()
        assert process.wait(20) == 0
        stderr = process.stderr.read()
    finally:
        process.kill()
        for stream in (process.stdout, process.stderr):
            stream.close()
    assert tracer_lines(stderr) == []
    second = server.messages(client=2)
    assert isinstance(second[0], m.Definitions) and [f.qualname for f in second[0].functions] == ["step"]
    stats = program.reports()["stats"]
    assert stats["reconnects"] == 1 and stats["connected"] is True


def test_forked_child_reconnects_as_a_new_client(server, workdir, sock_path):
    done, reports = run(workdir, sock_path, """
        from tracer import marking
        @marking.bundle()
        def work(x):
            return x + 1
        work(1)
        runtime.flush(5)
        pid = os.fork()
        if pid == 0:
            work(2)
            report(child_pid=os.getpid(), child_connected_after=runtime.flush(5) and runtime.is_connected(),
                   child_episode=runtime.current_episode())
            sys.exit(0)
        os.waitpid(pid, 0)
        print("parent done")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "parent done\n"
    assert tracer_lines(done.stderr) == [] and "DeprecationWarning" not in done.stderr
    server.wait_for(lambda: len(server.clients) == 2)
    parent, child = server.clients
    assert child.hello.pid == reports["child_pid"] != parent.hello.pid
    assert reports["child_connected_after"] is True and reports["child_episode"] == 1
    server.wait_for(lambda: called_funcs(server, client=child.client_id))
    assert len(called_funcs(server, client=child.client_id)) == 1  # only its own call: buffers started empty
    assert len(called_funcs(server, client=parent.client_id)) == 1


def test_what_is_left_is_flushed_at_exit(server, workdir, sock_path):
    done, _ = run(workdir, sock_path, """
        from tracer import marking
        @marking.bundle()
        def inc(x):
            return x + 1
        for i in range(2000):
            inc(i)
    """)
    assert done.returncode == 0, done.stderr
    server.wait_for(lambda: len(called_funcs(server)) == 2000)


def test_exit_is_not_held_up_by_a_stalled_daemon(server, workdir, sock_path):
    server.paused.set()
    started = time.monotonic()
    done, _ = run(workdir, sock_path, """
        from tracer import marking
        @marking.bundle()
        def blob(i):
            return "x" * 100_000 + str(i)
        for i in range(300):
            blob(i)
    """, start_args="exit_flush_timeout=0.5")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    server.paused.clear()


def test_slow_daemon_program_runs_on_and_drops_are_counted(server, workdir, sock_path):
    server.paused.set()
    done, reports = run(workdir, sock_path, """
        from tracer import buffers, marking
        @marking.bundle()
        def inc(x):
            return x + 1
        t0 = time.perf_counter()
        for i in range(100_000):
            inc(i)
        report(elapsed=time.perf_counter() - t0, stats=runtime.stats().__dict__, buffered=buffers.pending())
    """, start_args="buffer_limit=1000, max_pending_bytes=200_000, exit_flush_timeout=0.2")
    server.paused.clear()
    assert done.returncode == 0, done.stderr
    stats = reports["stats"]
    assert stats["dropped"] > 0
    assert stats["pending_bytes"] <= 200_000 and reports["buffered"] <= 1000 * 2
    assert reports["elapsed"] < 20


def test_new_episode_releases_the_values_kept_for_the_episode(server, workdir, sock_path):
    done, reports = run(workdir, sock_path, """
        import gc, tracemalloc
        from tracer import marking
        @marking.bundle()
        def make(i):
            return [i] * 10_000           # ~80 kB each, kept alive by the episode
        tracemalloc.start()
        runtime.flush(5)
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            make(i)
        runtime.flush(5)
        gc.collect()
        during = tracemalloc.get_traced_memory()[0]
        episode = runtime.new_episode()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        report(baseline=baseline, during=during, after=after, episode=episode)
    """)
    assert done.returncode == 0, done.stderr
    grown = reports["during"] - reports["baseline"]
    assert grown > 5_000_000, reports          # the episode did keep the values alive
    assert reports["after"] - reports["baseline"] < grown * 0.1
    assert reports["episode"] == 2
    assert [msg.episode for msg in server.messages(m.EpisodeClosed)] == [1]


def test_multiprocessing_fork_child_flushes_before_it_exits(server, workdir, sock_path):
    done, _ = run(workdir, sock_path, """
        import multiprocessing
        from tracer import marking
        @marking.bundle()
        def square(x):
            return x * x
        def child():
            for i in range(50):
                square(i)
        if __name__ == "__main__":
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
            process.join()
            print(process.exitcode)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n"
    server.wait_for(lambda: len(server.clients) == 2)
    child = server.clients[1].client_id
    server.wait_for(lambda: len(called_funcs(server, client=child)) == 50)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="CPython warns about fork with threads from 3.12")
def test_the_fork_warning_still_shows_when_the_program_has_threads_of_its_own(server, workdir, sock_path):
    done, _ = run(workdir, sock_path, """
        import threading
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        stop.set()
    """)
    assert done.returncode == 0
    assert "DeprecationWarning: This process" in done.stderr


def test_when_autostart_fails_one_line_says_why(workdir, sock_path):
    not_a_dir = os.path.join(workdir, "file")
    open(not_a_dir, "w").close()
    done, reports = run(workdir, sock_path, """
        print("ran")
        report(connected=runtime.is_connected())
    """, start_args="autostart=True", env={"TRACE_AUTOSTART": "1", "TRACE_STATE_DIR": os.path.join(not_a_dir, "state")})
    assert done.returncode == 0 and done.stdout == "ran\n"
    (line,) = tracer_lines(done.stderr)
    assert line.startswith("trace-live: tracing is off: no optimizer daemon is listening at ")
    assert "starting one failed" in line
    assert done.stderr.count("\n") == 1
    assert reports["connected"] is False


def test_a_patch_that_failed_does_not_count_as_the_applied_version(server, workdir, sock_path):
    program = Program(workdir, sock_path, """
        import tracer
        LIMIT = tracer.param(10, name="limit")
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        runtime.wait_for_patch(8, timeout=10)
        report(applied=runtime.applied_version(), patches=runtime.stats().patches_applied)
    """)
    process = program.start()
    try:
        assert process.stdout.readline() == "ready\n"
        server.send_to_all(m.Patch(version=7, items=[m.PatchItem(name="limit", kind="value", value=11)]))
        server.send_to_all(m.Patch(version=8, items=[m.PatchItem(name="limit", kind="value", value="nan?")]))
        process.wait(20)
    finally:
        process.kill()
    assert program.reports()["applied"] == 7 and program.reports()["patches"] == 1


def test_a_tracer_bug_at_start_turns_tracing_off_instead_of_failing_the_program(server, workdir, sock_path):
    done, reports = run(workdir, sock_path, """
        print("ran")
        report(connected=runtime.is_connected())
    """, start_args="client_name=None")  # not a str: the Hello cannot be encoded
    assert done.returncode == 0 and done.stdout == "ran\n"
    (line,) = tracer_lines(done.stderr)
    assert line.startswith("trace-live: tracing is off: internal error while starting")
    assert reports["connected"] is False


def test_an_error_the_daemon_sends_unasked_shows_in_stats(server, workdir, sock_path):
    program = Program(workdir, sock_path, """
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()
        deadline = time.monotonic() + 10
        while runtime.stats().last_daemon_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        report(error=runtime.stats().last_daemon_error)
    """)
    process = program.start()
    try:
        assert process.stdout.readline() == "ready\n"
        server.send_to_all(m.Error(code="bad_event", message="events.events[3]: unknown tag"))
        process.stdin.write("go\n"); process.stdin.flush()
        assert process.wait(20) == 0
    finally:
        process.kill()
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
    assert program.reports()["error"] == "bad_event: events.events[3]: unknown tag"


def test_trace_autostart_0_in_the_environment_turns_autostart_off(workdir, sock_path):
    done, _ = run(workdir, sock_path, "print('ran')", start_args="autostart=True", env={"TRACE_AUTOSTART": "0"})
    assert done.stdout == "ran\n"
    (line,) = tracer_lines(done.stderr)
    assert line.endswith("start one with 'trace-daemon start' (starting it automatically is disabled: TRACE_AUTOSTART=0)")
    assert not os.path.exists(os.path.join(workdir, "daemon.lock"))
