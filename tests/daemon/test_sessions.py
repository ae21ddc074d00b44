"""Sessions on a real daemon: minibatch steps, broadcast patches, late joiners, rejections."""
from __future__ import annotations

import json
import os
import time

from optimizer_service.sessions import Limits, SessionManager
from optimizer_service.store import StepRecord, Store
from protocol import client_hello
from protocol import messages as m
from tests.daemon.support import Client


def steps_of(env, session: str) -> list[dict]:
    with Client(env.socket) as admin:
        reply = admin.request("steps", session=session)
    assert reply.ok, reply.error
    return reply.data


def report(step: dict) -> dict:
    return json.loads(step["reasoning"])


def test_step_patches_every_process_including_one_that_gave_no_feedback(env, daemon):
    worker = Client(env.socket, "s")
    idle = Client(env.socket, "s")
    out = worker.run_episode(1, "Be brief.")
    idle.run_episode(1, "Be brief.")
    worker.send(m.Feedback(episode=1, node=out, text="too long"))
    done = worker.step(suggest={"prompt": "Be very brief."})
    assert done.error is None and done.version == 1
    assert done.changes == [{"name": "prompt", "kind": "value", "old": "Be brief.", "new": "Be very brief."}]
    for client in (worker, idle):
        patch = client.expect(m.Patch)
        assert patch.version == 1
        assert [(i.name, i.kind, i.value) for i in patch.items] == [("prompt", "value", "Be very brief.")]


def test_late_joiner_gets_latest_version_right_after_welcome(env, daemon):
    first = Client(env.socket, "s")
    out = first.run_episode(1, "v0")
    first.send(m.Feedback(episode=1, node=out, text="bad"))
    assert first.step(suggest={"prompt": "v1"}).version == 1
    first.send(m.Feedback(episode=1, node=out, text="still bad"))
    assert first.step(suggest={"prompt": "v2"}).version == 2

    late = Client(env.socket, "s")
    assert isinstance(late.welcome, m.Welcome) and late.welcome.version == 2
    patch = late.expect(m.Patch, timeout=2)
    assert patch.version == 2 and [(i.name, i.value) for i in patch.items] == [("prompt", "v2")]


def test_joiner_of_a_session_at_version_zero_gets_no_patch(env, daemon):
    client = Client(env.socket, "fresh")
    assert client.welcome.version == 0
    client.status()  # a round trip: anything sent after Welcome has arrived by now
    assert not [msg for msg in client.inbox if isinstance(msg, m.Patch)]


def test_step_aggregates_feedback_of_all_processes_since_last_step(env, daemon):
    a, b = Client(env.socket, "s"), Client(env.socket, "s")
    out_a, out_b = a.run_episode(1, "p"), b.run_episode(1, "p")
    a.send(m.Feedback(episode=1, node=out_a, text="from a"))
    b.send(m.Feedback(episode=1, node=out_b, text="from b"))
    b.status()
    assert a.step().version == 1
    a.send(m.Feedback(episode=1, node=out_a, text="later"))
    assert a.step().version == 2
    first, second = steps_of(env, "s")
    assert report(first)["feedback"] == ["from a", "from b"]
    assert report(second)["feedback"] == ["later"]


def test_optimizer_sees_feedback_subgraph_with_its_parameter(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "hello")
    client.send(m.Feedback(episode=1, node=out, text="meh"))
    client.step()
    seen = report(steps_of(env, "s")[0])
    assert seen["graph_nodes"] == 3 and seen["graph_params"] == ["prompt"]
    assert seen["params"] == {"prompt": "hello"}


def test_memory_holds_past_parameters_and_feedback_up_to_its_size(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "a")
    for text, size in (("one", 5), ("two", 5), ("three", 5), ("four", 1)):
        client.send(m.Feedback(episode=1, node=out, text=text))
        client.step(memory_size=size)
    steps = steps_of(env, "s")
    assert report(steps[2])["memory"] == [[{"prompt": "a"}, "one"], [{"prompt": "a!"}, "two"]]
    assert report(steps[3])["memory"] == [[{"prompt": "a!!"}, "three"]]


def test_rejected_patch_item_is_feedback_for_the_next_step(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    assert client.step().version == 1
    patch = client.expect(m.Patch)
    client.send(m.PatchAck(version=patch.version, results=[m.PatchResult(name="prompt", ok=False,
                                                                         error="SyntaxError: bad")]))
    client.send(m.Feedback(episode=1, node=out, text="y"))
    assert client.step().version == 2
    rejections = report(steps_of(env, "s")[1])["rejections"]
    assert len(rejections) == 1 and "'prompt'" in rejections[0] and "SyntaxError: bad" in rejections[0]


def test_applied_version_is_shown_per_process_after_ack(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    client.step()
    patch = client.expect(m.Patch)
    client.send(m.PatchAck(version=patch.version, results=[m.PatchResult(name="prompt", ok=True)]))
    process = client.status()["sessions"][0]["processes"][0]
    assert process["applied_version"] == 1


def test_step_without_feedback_fails_with_a_reason(env, daemon):
    client = Client(env.socket, "s")
    done = client.step()
    assert done.version is None and done.error_kind == "step_failed" and "feedback" in done.error


def test_optimizer_error_kind_reaches_the_requester_and_feedback_stays_pending(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    done = client.step(fail="llm_error")
    assert done.version is None and done.error_kind == "llm_error"
    assert client.step().version == 1  # the retry still has the feedback


def test_unknown_parameter_suggestion_is_rejected(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    done = client.step(suggest={"nope": 1})
    assert done.error_kind == "suggestion_rejected" and "nope" in done.error


def test_concurrent_step_requests_share_one_step(env, daemon):
    a, b = Client(env.socket, "s"), Client(env.socket, "s")
    out = a.run_episode(1, "p")
    a.send(m.Feedback(episode=1, node=out, text="x"))
    a.status()
    a.send(m.StepRequest(request_id=1, options={"sleep": 1.0}))
    a.status()  # answered after a's step task has started (the step itself runs in a worker)
    b.send(m.StepRequest(request_id=1, options={}))
    done_a, done_b = a.expect(m.StepDone), b.expect(m.StepDone)
    assert done_a.version == done_b.version == 1
    assert len(steps_of(env, "s")) == 1


def test_ingest_and_status_do_not_wait_for_a_running_step(env, daemon):
    stepper, other = Client(env.socket, "s"), Client(env.socket, "s")
    out = stepper.run_episode(1, "p")
    stepper.send(m.Feedback(episode=1, node=out, text="x"))
    stepper.send(m.StepRequest(request_id=99, options={"sleep": 2}))
    stepper.status()  # the step is running in its worker from here on
    started = time.monotonic()
    other.send(m.EventBatch(episode=5, events=[["v", i, {"t": "int", "id": i, "v": i}] for i in range(1000)]))
    status = other.status()
    assert time.monotonic() - started < 1.5
    mine = [p for p in status["sessions"][0]["processes"] if p["client_id"] == other.welcome.client_id]
    assert mine[0]["events"] == 1000
    assert stepper.expect(m.StepDone, timeout=10).version == 1


def test_processes_of_other_sessions_get_no_patch(env, daemon):
    a, stranger = Client(env.socket, "s"), Client(env.socket, "other")
    out = a.run_episode(1, "p")
    a.send(m.Feedback(episode=1, node=out, text="x"))
    a.step()
    a.expect(m.Patch)
    stranger.status()
    assert not [msg for msg in stranger.inbox if isinstance(msg, m.Patch)]


def test_episodes_without_feedback_are_released(env, daemon):
    client = Client(env.socket, "s")
    for episode in range(1, 21):
        client.run_episode(episode, "p")
    session = client.status()["sessions"][0]
    assert session["episodes"] <= 4


def test_episode_with_feedback_is_kept_until_a_step_uses_it(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    for episode in range(2, 12):
        client.run_episode(episode, "p")
    client.step()
    assert report(steps_of(env, "s")[0])["graph_nodes"] == 3


def test_step_in_a_session_without_trainable_parameters_says_how_to_mark_them(env, daemon):
    client = Client(env.socket, "s")
    client.send(m.EventBatch(episode=1, events=[["v", 1, {"t": "int", "id": 1, "v": 1}]]))
    client.send(m.Feedback(episode=1, node=1, text="x"))
    done = client.step()
    assert done.version is None and "no trainable parameter" in done.error and "tracer.param" in done.error


def persisted(env, session: str = "s") -> list[tuple[int, int, int]]:
    """(client, episode, event count) of the episodes the daemon keeps in its database."""
    store = Store(os.path.join(env.state_dir, "state.sqlite3"))
    try:
        return [(e.client_id, e.episode, len(e.events)) for e in store.persisted_episodes(session)]
    finally:
        store.close()


def test_feedback_persists_the_events_of_its_episode(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.run_episode(2, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    client.status()
    assert persisted(env) == [(client.welcome.client_id, 1, 5)]


def test_persisted_events_are_deleted_when_the_step_consuming_their_feedback_commits(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    assert client.step().error is None
    store = Store(os.path.join(env.state_dir, "state.sqlite3"))
    assert store.persisted_event_count("s") == 0


def test_a_failed_step_keeps_the_persisted_events_of_its_pending_feedback(env, daemon):
    client = Client(env.socket, "s")
    out = client.run_episode(1, "p")
    client.send(m.Feedback(episode=1, node=out, text="x"))
    assert client.step(fail="llm_error").error_kind == "llm_error"
    assert persisted(env) == [(client.welcome.client_id, 1, 5)]


def test_a_step_commit_deletes_only_the_events_of_the_feedback_it_consumed(tmp_path):
    # At the store: which feedback a step consumes is decided when it starts, and
    # feedback given meanwhile (episode 2 here) must keep its events.
    store = Store(tmp_path / "state.sqlite3")
    store.ensure_session("s")
    events = [["v", 1, {"t": "int", "id": 1, "v": 1}]]
    consumed = store.add_feedback("s", 1, 1, 1, "before", None, episode_events=events)
    store.add_feedback("s", 1, 2, 1, "during", None, episode_events=events + events)
    store.commit_step(StepRecord("s", 0, 1.0, 2.0, True), feedback_ids=[consumed], rejection_ids=[],
                      new_params=None, changes=[], memory=None)
    assert [(e.episode, len(e.events)) for e in store.persisted_episodes("s")] == [(2, 2)]
    assert store.persisted_event_count("s") == 2


def test_an_episode_released_past_the_feedback_limit_takes_its_persisted_events_along(tmp_path):
    manager = SessionManager(Store(tmp_path / "state.sqlite3"), executor=None, optimizer_factory=None,
                             limits=Limits(keep_idle_episodes=1, keep_feedback_episodes=2))
    session, member = manager.join(client_hello("s"), send=lambda msg: None)
    for number in range(1, 5):
        session.ingest(member, m.EventBatch(episode=number, events=[["v", 1, {"t": "int", "id": 1, "v": 1}]]))
        session.add_feedback(member, m.Feedback(episode=number, node=1, text=f"f{number}"))
    waiting_in_memory = sorted(n for (_, n), e in session.episodes.items() if e.feedback)
    assert waiting_in_memory == [2, 3, 4]  # episode 1 was released when episode 4 began
    assert [e.episode for e in manager.store.persisted_episodes("s")] == waiting_in_memory
    assert manager.store.persisted_event_count("s") == 3


def test_an_unreadable_persisted_episode_is_left_out_and_the_others_are_rebuilt(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    store.ensure_session("s")
    events = [["v", 1, {"t": "int", "id": 1, "v": 1}]]
    store.add_feedback("s", 1, 1, 1, "damaged", None, episode_events=events)
    store.add_feedback("s", 1, 2, 1, "intact", None, episode_events=events)
    store.append_episode_events("s", 1, 1, events)
    store._conn.execute("UPDATE episode_events SET events = x'c1' WHERE episode = 1 AND id = "
                        "(SELECT MAX(id) FROM episode_events WHERE episode = 1)")  # as a disk fault would
    assert [(e.episode, e.events) for e in store.persisted_episodes("s")] == [(2, events)]
    assert [f.text for f in store.pending_feedback("s")] == ["damaged", "intact"]
