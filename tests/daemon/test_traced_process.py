"""Real traced programs (tracer runtime, autostart, patcher) against the real daemon."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tracer.runtime")
pytest.importorskip("tracer.patcher")

PROGRAM = textwrap.dedent("""
    import sys, time
    import tracer

    PROMPT = tracer.param("Be brief.", name="prompt")

    @tracer.bundle()
    def answer(question):
        return PROMPT + " " + question

    tracer.session("live")
    print("start", PROMPT, flush=True)
    role = sys.argv[1]
    if role == "step":
        out = answer("hi")
        tracer.feedback(out, "too short")
        print("step", tracer.step(timeout=30, suggest={"prompt": sys.argv[2]}), flush=True)
    elif role == "wait":
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while PROMPT == "Be brief." and time.monotonic() < deadline:
            answer("tick")
            time.sleep(0.02)
    print("end", PROMPT, flush=True)
""")


def run(env, tmp_path, *args, **popen):
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    return subprocess.Popen([sys.executable, str(script), *args], env=env.environ(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_traced_program_autostarts_the_daemon_steps_and_runs_the_patched_value(env, tmp_path):
    out, err = run(env, tmp_path, "step", "Be detailed.").communicate(timeout=60)
    assert "step version 1: prompt: 'Be brief.' -> 'Be detailed.'" in out, err
    assert out.strip().endswith("end Be detailed.")


def test_patch_reaches_a_running_program_that_gave_no_feedback(env, tmp_path):
    waiter = run(env, tmp_path, "wait")
    try:
        assert waiter.stdout.readline().startswith("start")
        assert waiter.stdout.readline().strip() == "ready"
        stepper_out, stepper_err = run(env, tmp_path, "step", "Be kind.").communicate(timeout=60)
        assert "step version 1" in stepper_out, stepper_err
        rest, err = waiter.communicate(timeout=40)
        assert rest.strip() == "end Be kind.", err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()


def test_program_started_later_begins_with_the_latest_version(env, tmp_path):
    run(env, tmp_path, "step", "Be exact.").communicate(timeout=60)
    out, err = run(env, tmp_path, "none").communicate(timeout=60)
    assert out.splitlines()[0] == "start Be exact.", err


def test_running_program_reconnects_after_kill_9_and_restart_and_gets_the_next_patch(env, tmp_path):
    import os
    import signal

    from tests.daemon.support import stop_process

    daemon = env.serve()
    waiter = run(env, tmp_path, "wait")
    try:
        assert waiter.stdout.readline().startswith("start")
        assert waiter.stdout.readline().strip() == "ready"
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        daemon = env.serve()
        stepper_out, stepper_err = run(env, tmp_path, "step", "After restart.").communicate(timeout=60)
        assert "step version 1" in stepper_out, stepper_err
        rest, err = waiter.communicate(timeout=40)
        assert rest.strip() == "end After restart.", err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
        stop_process(daemon)
