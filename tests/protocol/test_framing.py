"""Frames: length header, streaming decoder, size limits, and what bad bytes raise."""
from __future__ import annotations

import struct

import msgpack
import pytest

from protocol import (
    DEFAULT_MAX_FRAME, FrameDecoder, FrameTooLarge, InvalidMessage, MalformedFrame, ProtocolError,
    UnencodableValue, decode_body, encode_message,
)
from protocol import messages as m


def feedback(n: int = 1) -> m.Feedback:
    return m.Feedback(episode=1, node=n, text=f"feedback {n}", score=0.5)


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_frame_is_big_endian_length_then_msgpack_body():
    frame = encode_message(feedback())
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert msgpack.unpackb(frame[4:])["kind"] == "feedback"


def test_default_max_frame_is_16_mib():
    assert DEFAULT_MAX_FRAME == 16 * 1024 * 1024
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME


def test_byte_by_byte_feeding_yields_each_message_when_its_last_byte_arrives():
    stream = encode_message(feedback(1)) + encode_message(feedback(2))
    first_length = len(encode_message(feedback(1)))
    decoder = FrameDecoder()
    arrivals = []
    for position in range(len(stream)):
        for message in decoder.feed(stream[position:position + 1]):
            arrivals.append((position, message))
    assert arrivals == [(first_length - 1, feedback(1)), (len(stream) - 1, feedback(2))]


def test_many_frames_in_one_chunk_decode_in_order():
    sent = [feedback(n) for n in range(500)]
    received = list(FrameDecoder().feed(b"".join(encode_message(x) for x in sent)))
    assert received == sent


def test_partial_header_then_the_rest():
    frame = encode_message(feedback())
    decoder = FrameDecoder()
    assert list(decoder.feed(frame[:2])) == []
    assert decoder.buffered == 2
    assert list(decoder.feed(frame[2:])) == [feedback()]
    assert decoder.buffered == 0


def test_chunk_ending_inside_the_next_frame_keeps_that_part():
    frame = encode_message(feedback())
    decoder = FrameDecoder()
    assert list(decoder.feed(frame + frame[:7])) == [feedback()]
    assert list(decoder.feed(frame[7:])) == [feedback()]


def test_oversized_header_is_rejected_before_the_body_arrives():
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge, match="1025 bytes, more than the maximum frame size of 1024"):
        list(decoder.feed(struct.pack(">I", 1025)))
    assert decoder.buffered == 0


def test_header_announcing_4_gib_is_rejected_without_allocating():
    with pytest.raises(FrameTooLarge):
        list(FrameDecoder().feed(b"\xff\xff\xff\xff" + b"\x00" * 10))


def test_decoder_stays_failed_after_an_oversized_header():
    decoder = FrameDecoder(max_frame_size=10)
    with pytest.raises(FrameTooLarge):
        list(decoder.feed(struct.pack(">I", 11)))
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_message(m.EpisodeClosed(episode=1)))


def test_frame_of_exactly_the_maximum_size_is_accepted():
    frame = encode_message(feedback())
    decoder = FrameDecoder(max_frame_size=len(frame) - 4)
    assert list(decoder.feed(frame)) == [feedback()]


def test_encoding_a_message_larger_than_the_maximum_frame_fails():
    big = m.Feedback(episode=1, node=1, text="x" * 2000)
    with pytest.raises(FrameTooLarge, match="feedback message encodes to"):
        encode_message(big, max_frame_size=1000)


def test_max_frame_size_must_be_a_positive_int():
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=0)


def test_bad_frame_is_consumed_and_the_frames_after_it_still_decode():
    stream = encode_message(feedback(1)) + frame_of(b"\xc1") + encode_message(feedback(2))
    decoder = FrameDecoder()
    received = []
    with pytest.raises(MalformedFrame):
        for message in decoder.feed(stream):
            received.append(message)
    assert received == [feedback(1)]
    assert list(decoder.feed(b"")) == [feedback(2)]


def test_empty_body_is_malformed():
    with pytest.raises(MalformedFrame):
        decode_body(b"")


def test_trailing_bytes_after_the_msgpack_value_are_malformed():
    with pytest.raises(MalformedFrame):
        decode_body(msgpack.packb({"kind": "episode_closed", "episode": 1}) + b"\x00")


def test_truncated_body_is_malformed():
    body = msgpack.packb({"kind": "feedback", "episode": 1, "node": 1, "text": "abc"})
    with pytest.raises(MalformedFrame):
        decode_body(body[:-2])


def test_invalid_utf8_string_is_malformed():
    body = b"\x82\xa4kind\xa8feedback\xa4text\xa2\xff\xfe"
    with pytest.raises(MalformedFrame, match="utf-8"):
        decode_body(body)


def test_extension_types_are_refused():
    body = msgpack.packb({"kind": "reply", "request_id": 1, "ok": True, "data": msgpack.ExtType(5, b"x")})
    with pytest.raises(MalformedFrame, match="extension type 5"):
        decode_body(body)


def test_huge_array_length_declared_inside_a_small_body_is_malformed():
    with pytest.raises(MalformedFrame, match="max_array_len"):
        decode_body(b"\x81\xa4kind\xdd\xff\xff\xff\xff")


def test_huge_bin_length_declared_inside_a_small_body_is_malformed():
    with pytest.raises(MalformedFrame):
        decode_body(b"\x81\xa4kind\xc6\xff\xff\xff\xff")


def test_deep_nesting_is_malformed_not_a_crash():
    with pytest.raises(MalformedFrame, match="nested too deep"):
        decode_body(b"\x91" * 100_000 + b"\xc0")


def test_non_str_map_key_is_malformed():
    with pytest.raises(MalformedFrame, match="map key"):
        decode_body(b"\x81\x01\x02")


def test_unhashable_map_key_is_malformed():
    with pytest.raises(MalformedFrame):
        decode_body(b"\x81\x90\x02")


def test_body_that_is_not_a_map_is_an_invalid_message():
    with pytest.raises(InvalidMessage, match="expected a map with a 'kind' key, got list"):
        decode_body(msgpack.packb([1, 2]))


@pytest.mark.parametrize("message, path", [
    (m.Feedback(episode=1, node=2, text=3), "feedback.text: expected str, got int"),
    (m.Feedback(episode="1", node=2, text=""), "feedback.episode: expected int, got str"),
    (m.Reply(request_id=1, ok=True, data={1: "a"}), "reply.data: map keys must be str, got int"),
    (m.Reply(request_id=1, ok=True, data=[object()]), r"reply.data\[0\]: object is not plain data"),
    (m.Patch(version=1, items=[m.PatchItem(name="p", kind="other")]), r"patch.items\[0\].kind: expected one of"),
    (m.Hello(protocol=(1, 0), python="3", pid=1, argv=["a\udcff"], session="s"), r"hello.argv\[0\]: str is not valid UTF-8"),
    (m.EventBatch(episode=1, events=[("ret", 1, 2**70, 0)]), r"events.events\[0\]\[2\]: int of 71 bits does not fit in 64 bits"),
    (m.EventBatch(episode=1, events=[("v", 1, {"t": "x", "id": 1, "r": object()})]), r"events.events\[0\]\[2\]\['r'\]: object cannot be sent"),
    (m.EventBatch(episode=1, events=[1]), r"events.events\[0\]: expected an event tuple or list, got int"),
    (m.StepRequest(request_id=2**64), "step.request_id: int of 65 bits does not fit in 64 bits"),
    (m.Feedback(episode=1, node=1, text="", score=10**400), "feedback.score: int of 1329 bits is too large for a float"),
    (m.EventBatch(episode=1, events=[("v", 1, {object(): 1})]), r"events.events\[0\]\[2\]: map key of type object cannot be sent"),
])
def test_encoding_names_the_field_that_cannot_be_sent(message, path):
    with pytest.raises(UnencodableValue, match=path):
        encode_message(message)


def test_data_that_contains_itself_cannot_be_sent():
    loop: list = []
    loop.append(loop)
    with pytest.raises(UnencodableValue, match="reply.data.*contains itself"):
        encode_message(m.Reply(request_id=1, ok=True, data=loop))


def test_event_that_contains_itself_cannot_be_sent():
    loop: list = ["v", 1]
    loop.append(loop)
    with pytest.raises(UnencodableValue, match="contains itself"):
        encode_message(m.EventBatch(episode=1, events=[loop]))


def test_encoding_something_that_is_not_a_message_fails_clearly():
    with pytest.raises(UnencodableValue, match="expected a protocol.messages class, got dict"):
        encode_message({"kind": "feedback"})


def test_every_error_is_a_protocol_error():
    for error in (FrameTooLarge, MalformedFrame, InvalidMessage, UnencodableValue):
        assert issubclass(error, ProtocolError)
