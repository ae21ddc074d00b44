"""kill -9 of the daemon mid-session, then a restart: nothing committed is lost."""
from __future__ import annotations

import json
import os
import signal

from optimizer_service.store import Store
from protocol import messages as m
from tests.daemon.support import Client, stop_process


def test_kill_9_then_restart_keeps_history_versions_and_memory(env):
    daemon = env.serve()
    try:
        client = Client(env.socket, "s")
        out = client.run_episode(1, "v0")
        for text, value in (("first", "v1"), ("second", "v2")):
            client.send(m.Feedback(episode=1, node=out, text=text))
            assert client.step(suggest={"prompt": value}).error is None
        client.send(m.Feedback(episode=1, node=out, text="pending when killed"))
        client.status()  # the feedback has been handled (and committed) by now
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        assert client.closed_by_peer()
    finally:
        stop_process(daemon)

    assert os.path.exists(env.socket)  # kill -9 leaves the socket behind: the restart must cope
    restarted = env.serve()
    try:
        late = Client(env.socket, "s")
        assert late.welcome.version == 2
        patch = late.expect(m.Patch)
        assert patch.version == 2 and [(i.name, i.value) for i in patch.items] == [("prompt", "v2")]

        # The feedback given before the crash is still pending; memory has both past steps.
        done = late.step(suggest={"prompt": "v3"})
        assert done.version == 3
        steps = late.request("steps", session="s").data
        assert [s["version"] for s in steps] == [1, 2, 3]
        seen = json.loads(steps[-1]["reasoning"])
        assert seen["feedback"] == ["pending when killed"]
        assert seen["memory"] == [[{"prompt": "v0"}, "first"], [{"prompt": "v1"}, "second"]]
        versions = late.request("versions", session="s").data
        assert [(v["version"], v["origin"]) for v in versions] == [(1, "step"), (2, "step"), (3, "step")]
    finally:
        stop_process(restarted)


def test_a_client_reconnecting_after_restart_is_a_new_client_of_the_same_session(env):
    daemon = env.serve()
    try:
        before = Client(env.socket, "s").welcome.client_id
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
    finally:
        stop_process(daemon)
    restarted = env.serve()
    try:
        after = Client(env.socket, "s")
        assert after.welcome.client_id > before  # node ids of the old connection can never be confused
        assert after.welcome.session == "s"
    finally:
        stop_process(restarted)


def test_kill_9_during_a_step_commits_nothing_half_and_the_step_can_be_retried(env):
    daemon = env.serve()
    try:
        client = Client(env.socket, "s")
        out = client.run_episode(1, "v0")
        client.send(m.Feedback(episode=1, node=out, text="slow one"))
        client.send(m.StepRequest(request_id=1, options={"sleep": 30, "suggest": {"prompt": "never"}}))
        client.status()  # the step is running in the worker now
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
    finally:
        stop_process(daemon)
    restarted = env.serve()
    try:
        again = Client(env.socket, "s")
        assert again.welcome.version == 0
        assert again.request("steps", session="s").data == []
        done = again.step(suggest={"prompt": "v1"})
        assert done.version == 1
        assert json.loads(again.request("steps", session="s").data[0]["reasoning"])["feedback"] == ["slow one"]
    finally:
        stop_process(restarted)


# -- the trace that pending feedback points to survives kill -9 -------------------------------------------------


def kill_9(daemon) -> None:
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait(10)


def database(env) -> Store:
    return Store(os.path.join(env.state_dir, "state.sqlite3"))


def step_report(client: Client, **options) -> dict:
    done = client.step(**options)
    assert done.error is None, done.error
    return json.loads(client.request("steps", session="s").data[-1]["reasoning"])


def test_kill_9_between_feedback_and_step_the_step_sees_the_episode_the_feedback_is_about(env):
    daemon = env.serve()
    try:
        client = Client(env.socket, "s")
        out = client.run_episode(1, "v0")
        client.send(m.Feedback(episode=1, node=out, text="too long"))
        client.status()  # the feedback (and the episode's events with it) is committed by now
        kill_9(daemon)
    finally:
        stop_process(daemon)
    restarted = env.serve()
    try:
        seen = step_report(Client(env.socket, "s"))
        assert seen["feedback"] == ["too long"]
        assert seen["graph_nodes"] == 3 and seen["graph_params"] == ["prompt"]
    finally:
        stop_process(restarted)


def test_events_that_arrive_after_their_feedback_survive_kill_9(env):
    daemon = env.serve()
    try:
        client = Client(env.socket, "s")
        # The feedback overtakes the events of its episode (a process whose flush timed out).
        client.send(m.Feedback(episode=1, node=13, text="too long"))
        client.run_episode(1, "v0")
        client.status()
        kill_9(daemon)
    finally:
        stop_process(daemon)
    restarted = env.serve()
    try:
        seen = step_report(Client(env.socket, "s"))
        assert seen["graph_nodes"] == 3 and seen["graph_params"] == ["prompt"]
    finally:
        stop_process(restarted)


def test_a_restart_rebuilds_the_pending_episodes_of_every_process(env):
    daemon = env.serve()
    try:
        first, second = Client(env.socket, "s"), Client(env.socket, "s")
        out_first = first.run_episode(1, "v0")
        out_second = second.run_episode(4, "terse", param="style")
        second.run_episode(5, "terse", param="style")  # no feedback: not kept
        first.send(m.Feedback(episode=1, node=out_first, text="from the first"))
        second.send(m.Feedback(episode=4, node=out_second, text="from the second"))
        first.status(), second.status()
        kill_9(daemon)
    finally:
        stop_process(daemon)
    restarted = env.serve()
    try:
        client = Client(env.socket, "s")
        assert client.status()["sessions"][0]["episodes"] == 2
        seen = step_report(client, suggest={"prompt": "v1"})
        assert seen["feedback"] == ["from the first", "from the second"]
        assert seen["graph_nodes"] == 6 and seen["graph_params"] == ["prompt", "style"]
    finally:
        stop_process(restarted)


def test_an_episode_without_feedback_is_not_kept_across_a_restart(env):
    daemon = env.serve()
    try:
        client = Client(env.socket, "s")
        client.run_episode(1, "v0")
        client.status()
        kill_9(daemon)
    finally:
        stop_process(daemon)
    assert database(env).persisted_event_count("s") == 0
    restarted = env.serve()
    try:
        assert Client(env.socket, "s").status()["sessions"][0]["episodes"] == 0
    finally:
        stop_process(restarted)


def test_operation_sites_are_in_the_graph_after_a_restart(env):
    daemon = env.serve()
    try:
        client = Client(env.socket, "s")
        client.send(m.Definitions(sites=[m.SiteDef(id=3, func=7, op="BINARY_OP", line=2, col=11, text="a + b")]))
        client.send(m.EventBatch(episode=1, events=[
            ["v", 1, {"t": "int", "id": 1, "v": 1}], ["v", 2, {"t": "int", "id": 2, "v": 2}],
            ["v", 3, {"t": "int", "id": 3, "v": 3}], ["op", 4, None, 3, "+", [1, 2], 3]]))
        client.send(m.Feedback(episode=1, node=3, text="should be 4"))
        client.status()
        kill_9(daemon)
    finally:
        stop_process(daemon)
    restarted = env.serve()
    try:
        exported = json.loads(Client(env.socket).request("graph", session="s", format="json").data)
        [op] = [n for n in exported["nodes"] if n.get("kind") == "op"]
        assert op["site"]["text"] == "a + b" and op["site"]["line"] == 2
    finally:
        stop_process(restarted)
