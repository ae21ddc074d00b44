"""optimizer_service.in_process: the same service in a thread of the traced process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from optimizer_service.in_process import start_in_process
from protocol import messages as m
from tests.daemon.support import SCRIPTED, Client


def test_in_process_service_serves_steps_and_persists_them(env, monkeypatch):
    monkeypatch.setenv("TRACE_STATE_DIR", env.state_dir)
    service = start_in_process(optimizer=SCRIPTED)
    try:
        client = Client(service.socket_path, "inproc")
        out = client.run_episode(1, "v0")
        client.send(m.Feedback(episode=1, node=out, text="x"))
        assert client.step(suggest={"prompt": "v1"}).version == 1
        assert client.expect(m.Patch).items[0].value == "v1"
    finally:
        service.stop()
    assert not os.path.exists(service.socket_path)
    from optimizer_service.store import Store
    assert Store(os.path.join(env.state_dir, "state.sqlite3")).latest_version("inproc") == 1


def test_trace_run_in_process_needs_no_daemon(env, tmp_path):
    trace_run = os.path.join(os.path.dirname(sys.executable), "trace-run")
    if not os.path.exists(trace_run):
        pytest.skip("trace-run is not installed")
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""
        import tracer
        PROMPT = tracer.param("Be brief.", name="prompt")

        @tracer.bundle()
        def answer(q):
            return PROMPT + " " + q

        out = answer("hi")
        tracer.feedback(out, "too short")
        print(tracer.step(timeout=30, suggest={"prompt": "Be long."}))
        print(PROMPT)
    """))
    result = subprocess.run([trace_run, "--in-process", "--session", "ip", str(script)], env=env.environ(),
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Be long."
    assert not os.path.exists(env.socket)  # no daemon was started


def test_in_process_service_logs_to_its_file_not_to_the_programs_logging(env, monkeypatch):
    import logging

    class Collect(logging.Handler):
        records: list = []

        def emit(self, record):
            self.records.append(record)

    program_handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(program_handler)  # what logging.basicConfig in the program would do
    monkeypatch.setenv("TRACE_STATE_DIR", env.state_dir)
    try:
        service = start_in_process(optimizer=SCRIPTED)
        try:
            Client(service.socket_path, "quiet").status()
        finally:
            service.stop()
    finally:
        root.removeHandler(program_handler)
    assert not [r for r in program_handler.records if r.name.startswith("optimizer_service")]
    assert "joined session 'quiet'" in open(os.path.join(env.state_dir, "in-process.log")).read()
