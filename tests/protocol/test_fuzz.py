"""Fuzzing: random and mutated frames yield a valid message or a ProtocolError, in bounded memory and time."""
from __future__ import annotations

import itertools
import random
import struct
import time
import tracemalloc

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import FrameDecoder, ProtocolError, decode_body, encode_message, render, summarize, validate_event
from protocol import messages as m

MAX_FRAME = 64 * 1024
FRAMES = 12_000


def corpus() -> list[bytes]:
    """One valid body per message kind, plus an event batch with every event tag."""
    function = m.FunctionDef(id=1, module="app", qualname="f", source="def f(x):\n    return x\n", doc=None,
                             signature="(x)", file="app.py", line=3, trainable=True, freevars=["y"])
    messages = [
        m.Hello(protocol=(1, 0), python="3.12.1", pid=42, argv=["app.py", "-v"], session="s", auth_token="t"),
        m.Welcome(protocol=(1, 0), daemon_pid=7, client_id=3, session="s", version=2),
        m.Reject(reason="no", protocol=(1, 0)),
        m.Definitions(functions=[function], params=[m.ParamDef(name="p", type="str", value="hi", kind="global")],
                      sites=[m.SiteDef(id=5, func=1, op="BINARY_OP", line=4, col=11, text="x + 1")]),
        m.EventBatch(episode=1, events=[
            ("v", 1, summarize({"a": [1, "two", 3.0, b"4", None], "b": 2**80})),
            ("param", 1, "p"), ("call", 2, 1, None, [["x", 1]], 99, 1000), ("read", 2, "p", 1),
            ("op", 3, 2, 5, "BINARY_OP", [1, 1], 4), ("ret", 2, 4, 1001), ("exc", 2, "E", "m", "tb", 1002),
        ], dropped=1),
        m.EpisodeClosed(episode=1),
        m.Feedback(episode=1, node=4, text="better", score=0.3),
        m.StepRequest(request_id=1, options={"timeout": 10}),
        m.StepDone(request_id=1, version=3, changes=[{"name": "p", "old": "a", "new": "b"}]),
        m.Patch(version=3, items=[m.PatchItem(name="p", kind="value", value="b"),
                                  m.PatchItem(name="f", kind="source", source="def f(x):\n    return x\n")]),
        m.PatchAck(version=3, results=[m.PatchResult(name="p", ok=True), m.PatchResult(name="f", ok=False, error="e")]),
        m.Error(code="bad", message="m", request_id=None),
        m.StatusQuery(request_id=9),
        m.StatusReply(request_id=9, status={"clients": [1, 2], "ok": True}),
        m.Request(request_id=4, command="export", args={"format": "dot"}),
        m.Reply(request_id=4, ok=True, data={"graph": "digraph {}"}),
        m.Unknown("future_kind", {"x": [1, 2]}),
    ]
    return [encode_message(message)[4:] for message in messages]


def mutate(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.choice([1, 1, 1, 2, 4])):
        choice = rng.randrange(12) % 6 if rng.random() < 0.5 else rng.randrange(2)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:                       # flip bits
            data[position % len(data)] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:                     # replace a byte, often with a msgpack type marker
            data[position % len(data)] = rng.choice([0xC0, 0xC1, 0xC4, 0xC6, 0xC7, 0xD9, 0xDB, 0xDC, 0xDD,
                                                      0xDE, 0xDF, 0x91, 0x81, 0xFF, rng.randrange(256)])
        elif choice == 2:                              # truncate
            del data[position:]
        elif choice == 3:                              # insert random bytes
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif choice == 4 and data:                     # delete a run
            del data[position:position + rng.randint(1, 8)]
        else:                                          # invalid UTF-8 inside a str
            data[position:position] = b"\xa2\xff\xfe"
    return bytes(data)


def wrongly_typed(rng: random.Random) -> bytes:
    kind = rng.choice([*m.MESSAGE_CLASSES, "x"])
    fields = {"kind": kind}
    scalars = [None, True, -1, 2**64 - 1, 1.5, "s", b"b", [], {}, [[1]], {"t": "int"}]
    for name in ("protocol", "episode", "events", "text", "items", "results", "functions", "params",
                 "request_id", "version", "status", "data", "node", "options", "ok", "argv"):
        if rng.random() < 0.5:
            fields[name] = rng.choice(scalars)
    return msgpack.packb(fields)


def huge_declared_length(rng: random.Random) -> bytes:
    marker = rng.choice([b"\xdb", b"\xc6", b"\xdd", b"\xdf", b"\xc9"])
    return b"\x82\xa4kind\xa5reply\xa4data" + marker + struct.pack(">I", rng.randrange(2**20, 2**32))


def deep_nesting(rng: random.Random) -> bytes:
    depth = rng.choice([65, 200, 1023, 1025, 5000, 50_000])
    prefix = rng.choice([b"\x91", b"\x81\xa1a"])
    return b"\x82\xa4kind\xa5reply\xa4data" + prefix * depth + b"\xc0"


def frames(rng: random.Random):
    bodies = corpus()
    for index in range(FRAMES):
        category = index % 8
        if category in (0, 1, 2):
            body = mutate(rng.choice(bodies), rng)
        elif category == 3:
            body = rng.randbytes(rng.randint(0, 200))
        elif category == 4:
            body = wrongly_typed(rng)
        elif category == 5:
            body = huge_declared_length(rng)
        elif category == 6:
            body = deep_nesting(rng)
        else:
            body = rng.choice(bodies)
        header_size = len(body)
        if rng.random() < 0.05:
            header_size = rng.choice([MAX_FRAME + 1, 2**32 - 1, rng.randrange(MAX_FRAME, 2**32)])
        elif rng.random() < 0.05:
            header_size = max(0, len(body) + rng.randint(-5, 5))
        yield struct.pack(">I", header_size) + body


def consume(message) -> None:
    """What a receiver does with a message: validate events, render summaries."""
    assert isinstance(message, (*m.MESSAGE_CLASSES.values(), m.Unknown))
    if isinstance(message, m.EventBatch):
        for event in message.events:
            try:
                validate_event(event)
            except ProtocolError:
                continue
            if event[0] == "v":
                assert isinstance(render(event[2]), str)


def decode_fuzzed_frames(count: int, rng: random.Random) -> dict[str, int]:
    """Feed `count` fuzzed frames, each to a fresh decoder in random chunk sizes; count the outcomes.

    Anything but a message or a ProtocolError escapes and fails the test.
    """
    outcomes = {"message": 0, "error": 0, "incomplete": 0}
    for frame in itertools.islice(frames(rng), count):
        decoder = FrameDecoder(max_frame_size=MAX_FRAME)
        chunk = rng.choice([1, 7, 64, len(frame)])
        try:
            got = 0
            for start in range(0, len(frame), chunk):
                for message in decoder.feed(frame[start:start + chunk]):
                    consume(message)
                    got += 1
            outcomes["message" if got else "incomplete"] += 1
        except ProtocolError:
            outcomes["error"] += 1
    return outcomes


def test_fuzzed_frames_yield_messages_or_protocol_errors_quickly():
    started = time.process_time()  # CPU time: the test machine is shared
    outcomes = decode_fuzzed_frames(FRAMES, random.Random(20261121))
    elapsed = time.process_time() - started
    assert sum(outcomes.values()) == FRAMES
    assert outcomes["message"] > 1000 and outcomes["error"] > 5000, outcomes
    assert elapsed < 20, f"{elapsed:.1f} s of CPU"


def test_fuzzed_frames_are_decoded_in_bounded_memory():
    # tracemalloc slows every allocation tenfold, so it watches a sample that
    # still covers every category of bad frame (the generator cycles through them).
    tracemalloc.start()
    try:
        decode_fuzzed_frames(2_000, random.Random(99))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_one_stream_of_good_and_bad_frames_keeps_every_good_message():
    rng = random.Random(7)
    bodies = corpus()
    good = [rng.choice(bodies) for _ in range(300)]
    stream = bytearray()
    for body in good:
        stream += struct.pack(">I", len(body)) + body
        if rng.random() < 0.5:
            bad = mutate(body, rng)
            stream += struct.pack(">I", len(bad)) + bad
    decoder = FrameDecoder(max_frame_size=MAX_FRAME)
    received = []
    pending = bytes(stream)
    while True:
        try:
            for message in decoder.feed(pending):
                received.append(message)
            break
        except ProtocolError:
            pending = b""
    expected = [decode_body(body) for body in good]
    # Every good frame arrives, in order; some mutated frames are still valid messages.
    iterator = iter(received)
    assert all(any(message == wanted for message in iterator) for wanted in expected)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_body_decode_or_raise_a_protocol_error(body):
    try:
        decode_body(body)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_any_byte_stream_decodes_or_raises_a_protocol_error(stream, chunk):
    decoder = FrameDecoder(max_frame_size=1024)
    try:
        for start in range(0, len(stream), chunk):
            for _ in decoder.feed(stream[start:start + chunk]):
                pass
    except ProtocolError:
        pass
