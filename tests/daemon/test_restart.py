"""kill -9 of the daemon mid-session, then a restart: nothing committed is lost."""
from __future__ import annotations

import json
import os
import signal

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
