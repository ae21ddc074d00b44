"""`trace-daemon` commands as a user types them, against a real daemon process."""
from __future__ import annotations

import json
import os

import networkx as nx

from protocol import messages as m
from tests.daemon.support import Client, connectable


def test_start_status_stop(env):
    started = env.cli("start")
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("trace-daemon started (pid ")
    pid = int(started.stdout.split("pid ")[1].split(")")[0])

    status = env.cli("status")
    assert status.returncode == 0, status.stderr
    assert f"pid {pid}" in status.stdout
    assert env.socket in status.stdout and "state.sqlite3" in status.stdout and "LLM use" in status.stdout

    stopped = env.cli("stop")
    assert stopped.returncode == 0 and f"stopped (pid {pid})" in stopped.stdout
    assert not connectable(env.socket) and not os.path.exists(env.socket)
    assert not os.path.exists(os.path.join(env.state_dir, "daemon.json"))


def test_start_when_running_reports_the_running_daemon(env, daemon):
    again = env.cli("start")
    assert again.returncode == 0 and f"already running (pid {daemon.pid})" in again.stdout


def test_status_and_stop_without_daemon_exit_3_with_advice(env):
    for command in ("status", "stop"):
        result = env.cli(command)
        assert result.returncode == 3
        assert "trace-daemon start" in result.stderr


def test_second_serve_refuses_to_run_beside_the_first(env, daemon):
    second = env.cli("serve", timeout=20)
    assert second.returncode == 1
    assert f"pid {daemon.pid}" in second.stderr and "already running" in second.stderr


def test_status_shows_sessions_processes_versions_and_llm_use(env, daemon):
    client = Client(env.socket, "demo")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    client.step()
    status = env.cli("status")
    assert "session demo: version 1, 1 steps" in status.stdout
    assert f"pid {os.getpid()} (client {client.welcome.client_id})" in status.stdout
    assert "0 LLM calls" in status.stdout
    raw = json.loads(env.cli("status", "--json").stdout)
    assert raw["sessions"][0]["processes"][0]["events"] == 5


def test_graph_command_exports_dot_json_and_graphml(env, daemon, tmp_path):
    client = Client(env.socket, "g")
    client.run_episode(1, "hello")
    client.status()
    dot = env.cli("graph", "g", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph trace {") and "answer()" in dot.stdout and "prompt = 'hello'" in dot.stdout

    data = json.loads(env.cli("graph", "g", "--format", "json").stdout)
    assert len(data["nodes"]) == 3 and len(data["edges"]) == 2

    target = tmp_path / "g.graphml"
    assert env.cli("graph", "g", "--episode", "1", "--format", "graphml", "-o", str(target)).returncode == 0
    graph = nx.read_graphml(target)
    assert graph.number_of_nodes() == 3 and graph.nodes["v:%d:11" % client.welcome.client_id]["param"] == "prompt"


def test_graph_of_unknown_session_or_episode_fails_clearly(env, daemon):
    client = Client(env.socket, "g")
    client.run_episode(1, "hello")
    client.status()
    unknown = env.cli("graph", "nope")
    assert unknown.returncode == 1 and "no session named 'nope'" in unknown.stderr
    missing = env.cli("graph", "g", "--episode", "9")
    assert missing.returncode == 1 and "no live episode 9" in missing.stderr and "live episodes: 1" in missing.stderr


def test_rollback_restores_an_older_version_and_patches_running_processes(env, daemon):
    client = Client(env.socket, "r")
    out = client.run_episode(1, "v0")
    for value in ("v1", "v2"):
        client.send(m.Feedback(episode=1, node=out, text="x"))
        client.step(suggest={"prompt": value})
        client.expect(m.Patch)
    result = env.cli("rollback", "r", "1")
    assert result.returncode == 0, result.stderr
    assert "version 3 restores version 1 (prompt)" in result.stdout
    patch = client.expect(m.Patch)
    assert patch.version == 3 and [(i.name, i.value) for i in patch.items] == [("prompt", "v1")]
    assert env.cli("rollback", "r").stdout.startswith("session r: version 4 restores version 2")


def test_rollback_to_a_missing_version_fails_clearly(env, daemon):
    Client(env.socket, "r").status()
    result = env.cli("rollback", "r", "7")
    assert result.returncode == 1 and "versions 0..0" in result.stderr


def test_python_dash_m_and_console_script_are_the_same_cli(env):
    import shutil
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(sys.executable), "trace-daemon")
    assert shutil.which(script)
    result = subprocess.run([script, "status"], env=env.environ(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 3


def test_export_writes_the_latest_parameters_even_after_the_daemon_stopped(env, daemon, tmp_path):
    client = Client(env.socket, "x")
    out = client.run_episode(1, "v0")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    client.step(suggest={"prompt": "v1"})
    daemon.terminate()
    daemon.wait(10)
    target = tmp_path / "export.json"
    result = env.cli("export", "x", "--format", "json", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "v1" in target.read_text()
    unknown = env.cli("export", "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stderr


def test_graph_of_a_past_step_comes_from_the_database(env, daemon):
    client = Client(env.socket, "h")
    out = client.run_episode(1, "hello")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    client.step()
    daemon.terminate()
    daemon.wait(10)
    dot = env.cli("graph", "h", "--step", "0")
    assert dot.returncode == 0, dot.stderr
    assert "prompt = 'hello'" in dot.stdout and "answer()" in dot.stdout
    missing = env.cli("graph", "h", "--step", "5")
    assert missing.returncode == 1 and "has no step 5 (steps: 0)" in missing.stderr
