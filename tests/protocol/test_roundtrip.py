"""Property tests: every message kind survives encode -> frames cut anywhere -> decode."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import FrameDecoder, decode_body, encode_message
from protocol import messages as m

from .strategies import MESSAGES, any_message


def test_strategies_cover_every_message_kind():
    assert set(MESSAGES) == set(m.MESSAGE_CLASSES)


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_message_decodes_to_an_equal_message(kind):
    @settings(max_examples=60, deadline=None)
    @given(MESSAGES[kind])
    def check(message):
        frame = encode_message(message)
        decoded = decode_body(frame[4:])
        assert type(decoded) is type(message)
        assert decoded == message

    check()


@settings(max_examples=100, deadline=None)
@given(st.lists(any_message, min_size=1, max_size=5), st.data())
def test_stream_cut_at_random_points_yields_the_same_messages(sent, data):
    stream = b"".join(encode_message(message) for message in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        received.extend(decoder.feed(stream[start:end]))
    assert received == sent
    assert decoder.buffered == 0


def test_version_comes_back_as_a_tuple():
    hello = m.Hello(protocol=(1, 3), python="3.12.1", pid=7, argv=["x"], session="s")
    assert decode_body(encode_message(hello)[4:]).protocol == (1, 3)


def test_event_tuples_come_back_as_lists():
    batch = m.EventBatch(episode=1, events=[("ret", 1, 2, 3)])
    assert decode_body(encode_message(batch)[4:]).events == [["ret", 1, 2, 3]]


def test_unknown_kind_round_trips_with_its_fields():
    message = m.Unknown("telemetry", {"cpu": 0.5, "tags": ["a"]})
    assert decode_body(encode_message(message)[4:]) == message
