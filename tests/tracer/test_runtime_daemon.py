"""The runtime against the real daemon process, with the scripted (LLM-free) optimizer.

A traced program sends its events, gives feedback, asks for a step and
gets the patch applied live; a later process of the same session starts on
the patched value; with autostart on, the first process starts the daemon.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from protocol.locations import Locations, daemon_lock_held
from tests.daemon.support import DaemonEnv, short_tmpdir, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """\
import sys
from tracer import runtime
if "--in-process" in sys.argv:
    from optimizer_service.in_process import start_in_process
    runtime.start(runtime.RuntimeConfig(session="greeter", service_factory=start_in_process))
else:
    runtime.start(runtime.RuntimeConfig(session="greeter", autostart={autostart}))
import tracer
from tracer import marking
from protocol import messages as m

PROMPT = tracer.param("hello", name="prompt")
print("first line sees", PROMPT, flush=True)

@marking.bundle()
def greet(name):
    return PROMPT + ", " + name

out = greet("bob")
if "--loop" in sys.argv:
    for line in sys.stdin:
        name, flush_timeout = line.split()
        print(greet(name), runtime.flush(float(flush_timeout)), flush=True)
if "--step" in sys.argv:
    assert runtime.flush(10)
    episode, node = runtime.with_resolver(lambda resolver, episode: (episode, resolver.node_for_value(out)))
    runtime.send(m.Feedback(episode=episode, node=node, text="more enthusiasm"))
    done = runtime.request(m.StepRequest(request_id=runtime.next_request_id()), timeout=30)
    results = runtime.wait_for_patch(done.version, 10)
    print("step", done.version, [(r.name, r.ok) for r in results], "now", PROMPT, flush=True)
"""


@pytest.fixture
def env():
    root = short_tmpdir()
    env = DaemonEnv(socket=f"{root}/d.sock", state_dir=f"{root}/state")
    yield env
    _stop_detached_daemon(env)
    shutil.rmtree(root, ignore_errors=True)


def _stop_detached_daemon(env: DaemonEnv) -> None:
    locations = Locations(socket=Path(env.socket), state_dir=Path(env.state_dir))
    if not locations.state_dir.exists() or not daemon_lock_held(locations):
        return
    pid = int(locations.daemon_lock.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not daemon_lock_held(locations), 10):
        os.kill(pid, signal.SIGKILL)


def run_program(env: DaemonEnv, *args: str, autostart: bool = False, **extra_env: str) -> subprocess.CompletedProcess:
    path = Path(env.state_dir).parent / "greeter.py"
    path.write_text(PROGRAM.format(autostart=autostart))
    return subprocess.run([sys.executable, str(path), *args], env=env.environ(**extra_env),
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_a_step_patches_the_running_program_and_the_next_process_starts_patched(env):
    daemon = env.serve()
    try:
        first = run_program(env, "--step")
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == [
            "first line sees hello",
            "step 1 [('prompt', True)] now hello!",
        ]
        second = run_program(env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines()[0] == "first line sees hello!"
        assert "trace-live:" not in first.stderr + second.stderr
    finally:
        stop_process(daemon)


def test_with_autostart_the_first_process_starts_the_daemon(env):
    result = run_program(env, autostart=True, TRACE_AUTOSTART="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first line sees hello\n"
    assert "trace-live:" not in result.stderr
    locations = Locations(socket=Path(env.socket), state_dir=Path(env.state_dir))
    assert daemon_lock_held(locations)


def test_in_process_mode_steps_without_a_daemon(env):
    result = run_program(env, "--in-process", "--step")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["first line sees hello", "step 1 [('prompt', True)] now hello!"]
    assert "trace-live:" not in result.stderr
    assert not Path(env.socket).exists()  # no daemon was started or used


def test_the_program_outlives_a_killed_daemon_and_reports_to_its_successor(env):
    daemon = env.serve()
    path = Path(env.state_dir).parent / "greeter.py"
    path.write_text(PROGRAM.format(autostart=False))
    program = subprocess.Popen([sys.executable, str(path), "--loop"], env=env.environ(), cwd=REPO, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert program.stdout.readline() == "first line sees hello\n"
        program.stdin.write("ann 10\n"); program.stdin.flush()
        assert program.stdout.readline() == "hello, ann True\n"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        program.stdin.write("bea 0.3\n"); program.stdin.flush()
        assert program.stdout.readline() == "hello, bea False\n"  # no daemon: flush gives up, the program goes on
        stop_process(daemon)
        daemon = env.serve()
        program.stdin.write("cid 10\n"); program.stdin.flush()
        assert program.stdout.readline() == "hello, cid True\n"
        status = json.loads(env.cli("status", "--json").stdout)
        (ours,) = [p for s in status["sessions"] for p in s["processes"] if p["pid"] == program.pid]
        assert ours["events"] > 0
        program.stdin.close()
        assert program.wait(20) == 0
        assert "trace-live:" not in program.stderr.read()
    finally:
        program.kill()
        for stream in (program.stdout, program.stderr):
            stream.close()
        stop_process(daemon)
