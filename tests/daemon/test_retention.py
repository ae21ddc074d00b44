"""Daemon memory stays bounded: episode retention and the per-episode event cap."""
from __future__ import annotations

import pytest

from optimizer_service.sessions import Limits, SessionManager
from optimizer_service.store import Store
from protocol import client_hello
from protocol import messages as m


@pytest.fixture
def manager(tmp_path):
    return SessionManager(Store(tmp_path / "state.sqlite3"), executor=None, optimizer_factory=None,
                          limits=Limits(keep_idle_episodes=2, keep_feedback_episodes=3, max_episode_events=10))


def events(n: int) -> list[list]:
    return [["v", i, {"t": "int", "id": i, "v": i}] for i in range(n)]


def test_an_episode_stops_growing_at_its_cap_and_counts_the_rest_as_dropped(manager):
    session, member = manager.join(client_hello("s"), send=lambda msg: None)
    session.ingest(member, m.EventBatch(episode=1, events=events(25), dropped=2))
    episode = session.episodes[(member.client_id, 1)]
    assert len(episode.events) == 10 and episode.dropped == 17
    assert member.events == 25  # received and counted, even if not all kept


def test_only_the_newest_idle_episodes_are_kept(manager):
    session, member = manager.join(client_hello("s"), send=lambda msg: None)
    for number in range(1, 8):
        session.ingest(member, m.EventBatch(episode=number, events=events(3)))
    assert sorted(n for _, n in session.episodes) == [6, 7]


def test_episodes_with_feedback_outlive_idle_ones_up_to_their_own_limit(manager):
    session, member = manager.join(client_hello("s"), send=lambda msg: None)
    for number in range(1, 6):
        session.ingest(member, m.EventBatch(episode=number, events=events(3)))
        session.add_feedback(member, m.Feedback(episode=number, node=1, text=f"f{number}"))
    for number in range(6, 9):
        session.ingest(member, m.EventBatch(episode=number, events=events(3)))
    kept = sorted(n for _, n in session.episodes)
    assert kept == [3, 4, 5, 7, 8]
    # The released episodes' feedback text is still there for the next step.
    assert [f.text for f in manager.store.pending_feedback("s")] == ["f1", "f2", "f3", "f4", "f5"]


def test_a_leaving_process_takes_its_idle_episodes_with_it(manager):
    session, member = manager.join(client_hello("s"), send=lambda msg: None)
    session.ingest(member, m.EventBatch(episode=1, events=events(3)))
    session.ingest(member, m.EventBatch(episode=2, events=events(3)))
    session.add_feedback(member, m.Feedback(episode=2, node=1, text="keep me"))
    manager.leave(session, member)
    assert list(session.episodes) == [(member.client_id, 2)]
