"""How fast batched trace events cross the wire, against raw msgpack on the same tuples.

    python benchmarks/bench_protocol.py [--events N] [--batch B] [--repeats R]

Builds a realistic event stream (docs/internals.md §3: mostly "v", "call"
and "ret" events with small summaries), then measures, best of R repeats
(CPU time; raw and protocol alternate, so both see the same load):

- raw:      msgpack.packb / msgpack.unpackb of each batch's list of tuples
- protocol: encode_message(EventBatch) / FrameDecoder.feed of the same batches

and prints events/s for encode, decode and the round trip, and the ratio
protocol / raw measured in the same run (the goal is >= 0.7).
"""
from __future__ import annotations

import argparse
import gc
import sys
import threading
import time

import msgpack

from protocol import FrameDecoder, encode_message, summarize
from protocol import messages as m


def realistic_events(count: int) -> list[tuple]:
    """A stream shaped like a traced program's: calls with two args, their values and returns."""
    events: list[tuple] = []
    thread = threading.get_ident()
    node = op = 0
    now = time.perf_counter_ns()
    values = [3, "the prompt text", 2.5, None, [1, 2, 3], "ok", True, {"k": 1}]
    while len(events) < count:
        op += 1
        arg_nodes = []
        for position in range(2):
            node += 1
            events.append(("v", node, summarize(values[(op + position) % len(values)])))
            arg_nodes.append([f"arg{position}", node])
        events.append(("call", op, 0x1234_5678_9ABC_DEF, op - 1 if op > 1 else None, arg_nodes, thread, now + op))
        if op % 4 == 0:
            events.append(("read", op, "prompt", arg_nodes[0][1]))
        node += 1
        events.append(("v", node, summarize(values[op % len(values)])))
        events.append(("ret", op, node, now + op + 100))
    return events[:count]


def best_seconds_interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Best CPU time of each function, alternating them so both see the same machine load.

    CPU time (not wall time) because the machine is shared: time spent
    preempted by other processes would otherwise land on whichever side ran.
    """
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for index, function in enumerate((first, second)):
            gc.collect()
            start = time.process_time()
            function()
            best[index] = min(best[index], time.process_time() - start)
    return best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="events per EventBatch")
    parser.add_argument("--repeats", type=int, default=15)
    options = parser.parse_args(argv)

    events = realistic_events(options.events)
    batches = [events[i:i + options.batch] for i in range(0, len(events), options.batch)]
    raw_packed = [msgpack.packb(batch) for batch in batches]
    frames = [encode_message(m.EventBatch(episode=1, events=batch)) for batch in batches]
    stream = b"".join(frames)

    def raw_encode():
        for batch in batches:
            msgpack.packb(batch)

    def raw_decode():
        for packed in raw_packed:
            msgpack.unpackb(packed)

    def raw_round_trip():
        for batch in batches:
            msgpack.unpackb(msgpack.packb(batch))

    def protocol_encode():
        for batch in batches:
            encode_message(m.EventBatch(episode=1, events=batch))

    def protocol_decode():
        decoder = FrameDecoder()
        for frame in frames:
            for _ in decoder.feed(frame):
                pass

    def protocol_round_trip():
        decoder = FrameDecoder()
        for batch in batches:
            for _ in decoder.feed(encode_message(m.EventBatch(episode=1, events=batch))):
                pass

    # The decoder must really return every event (guards against measuring a no-op).
    decoded = [event for message in FrameDecoder().feed(stream) for event in message.events]
    assert len(decoded) == len(events), (len(decoded), len(events))

    rows = []
    for label, raw, ours in (("encode", raw_encode, protocol_encode),
                             ("decode", raw_decode, protocol_decode),
                             ("round trip", raw_round_trip, protocol_round_trip)):
        raw_seconds, our_seconds = best_seconds_interleaved(raw, ours, options.repeats)
        raw_rate, our_rate = len(events) / raw_seconds, len(events) / our_seconds
        rows.append((label, raw_rate, our_rate, our_rate / raw_rate))

    print(f"Python {sys.version.split()[0]}, msgpack {'.'.join(map(str, msgpack.version))}, "
          f"{len(events)} events in batches of {options.batch}, "
          f"{len(stream) / len(events):.1f} bytes/event, best of {options.repeats}")
    print(f"{'':<12}{'raw msgpack':>16}{'protocol':>16}{'ratio':>8}")
    for label, raw_rate, our_rate, ratio in rows:
        print(f"{label:<12}{raw_rate:>12,.0f} ev/s{our_rate:>12,.0f} ev/s{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
