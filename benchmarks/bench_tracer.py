"""Tracer hot-path benchmarks: prints figures, each a ratio against a baseline measured in the same run.

    python benchmarks/bench_tracer.py            # all, about 30 s
    python benchmarks/bench_tracer.py --quick    # smaller counts

Figures (goals from the brief in brackets):

- call mode: a traced trivial call vs the same call untraced        [<= 10x]
- op mode: extra time per traced operation on the program's thread  [<= 0.5 us]
- `s += x` in a traced loop: time for 4n iterations / time for n     [<= ~4.5x]
- one million traced calls, resolved and released in episodes:
  resident memory at the end minus at the start                       [a few MB]
- resolver throughput on the flusher's side, in CPU time of the converting thread (so
  other load on the machine does not count): records converted to wire events per
  second, then converted and encoded into EventBatch frames, against msgpack alone
  packing the very same events in the same run, for two workloads (a fresh list
  passed and returned; an int in, a float out)           [>= 500k records/s with encoding]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import messages  # noqa: E402
from protocol.framing import encode_message  # noqa: E402
from tracer import buffers, marking, provenance  # noqa: E402
from tracer.flusher import DEFAULT_BATCH_EVENTS, DEFAULT_MAX_EPISODE_RECORDS  # noqa: E402


CHUNK = 2_000  # calls between two drains (the flusher drains every 50 ms)


def best_of(fn, repeat: int = 5) -> float:
    """Fastest of `repeat` runs of fn() (seconds), draining the buffers between runs."""
    best = float("inf")
    for _ in range(repeat):
        buffers.drain()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    buffers.drain()
    return best


def chunked(call, n: int, chunk: int = CHUNK):
    """A run of n calls of `call(i)` in chunks, draining between chunks (untimed, as the flusher
    does on its own thread): the hot path then reuses memory instead of growing the heap."""
    def run() -> float:
        spent = 0.0
        for start in range(0, n, chunk):
            t0 = time.perf_counter()
            for i in range(start, min(n, start + chunk)):
                call(i)
            spent += time.perf_counter() - t0
            buffers.drain()
        return spent
    return run


def best_chunked(run, repeat: int = 5) -> float:
    return min(run() for _ in range(repeat))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_trivial():
    def trivial(x):
        return x
    return trivial


def bench_call_mode(n: int) -> None:
    plain = make_trivial()
    traced = make_trivial()
    marking.instrument_function(traced, granularity="call")

    def loop(f):
        return chunked(f, n)

    # The floor for any hook-based tracer: the same call plus two calls of a
    # bare observing hook that appends a tuple (the design's "~0.2 us" hook).
    sink: list = []
    append = sink.append

    def bare_hook(a, b):
        append((a, b))
        if len(sink) > CHUNK * 2:
            sink.clear()

    def observed(x):
        bare_hook(1, x)
        bare_hook(2, x)
        return x

    t_plain = best_chunked(loop(plain))
    t_floor = best_chunked(loop(observed))
    sink.clear()
    t_traced = best_chunked(loop(traced))
    per_plain = t_plain / n * 1e9
    per_floor = t_floor / n * 1e9
    per_traced = t_traced / n * 1e9
    print(f"call mode: plain call {per_plain:.0f} ns, with two bare observing hooks {per_floor:.0f} ns "
          f"({t_floor / t_plain:.1f}x), traced call {per_traced:.0f} ns: ratio {t_traced / t_plain:.1f}x "
          f"(goal <= 10x), {t_traced / t_floor:.1f}x the bare-hook floor")


OPS_PER_ITERATION = 8


def make_ops():
    def ops(a, b, n):
        total = 0
        for i in range(n):
            c = a + b          # 1 binary op
            d = c * 2          # 2
            e = d - a < b      # 3, 4 (subtract, compare)
            f = [c, d][1]      # 5 (subscript)
            g = f"{c}"         # 6, 7 (format, f-string)
            total += f         # 8 (in-place add)
        return total, e, g
    return ops


def bench_op_mode(n: int) -> None:
    plain = make_ops()
    traced = make_ops()
    marking.instrument_function(traced, granularity="op")
    per_call = 250  # iterations per call; the buffers are drained between calls, as the flusher would
    calls = max(1, n // per_call)
    t_plain = best_chunked(chunked(lambda i: plain(3, 4, per_call), calls, chunk=1))
    t_traced = best_chunked(chunked(lambda i: traced(3, 4, per_call), calls, chunk=1))
    ops = calls * per_call * OPS_PER_ITERATION
    extra = (t_traced - t_plain) / ops * 1e6
    print(f"op mode: {ops} traced operations; plain {t_plain * 1e3:.1f} ms, traced {t_traced * 1e3:.1f} ms "
          f"(ratio {t_traced / t_plain:.1f}x); {extra:.2f} us extra per operation (goal <= 0.5 us)")


def make_builder():
    def build(n):
        s = ""
        for i in range(n):
            s += "xy"
        return len(s)
    return build


def bench_string_building(n: int) -> None:
    for mode in ("none", "call", "op"):
        build = make_builder()
        if mode != "none":
            marking.instrument_function(build, granularity=mode)
        small = best_of(lambda: build(n), repeat=3)
        large = best_of(lambda: build(4 * n), repeat=3)
        print(f"s += x, {mode:>4} mode: {n} iterations {small * 1e3:.2f} ms, {4 * n} iterations "
              f"{large * 1e3:.2f} ms, ratio {large / small:.2f}x (goal <= ~4.5x: linear)")


def bench_memory(total: int, episode: int) -> None:
    traced = make_trivial()
    marking.instrument_function(traced, granularity="call")
    resolver = provenance.Resolver()

    class Payload:  # a fresh, unshared object per call: the resolver must keep then free it
        __slots__ = ()

    def one_episode():
        for _ in range(episode):
            traced(Payload())
        resolver.convert(buffers.drain())
        resolver.release()

    one_episode()  # warm caches and allocator pools before the baseline
    gc.collect()
    start = rss_mb()
    t0 = time.perf_counter()
    for _ in range(total // episode):
        one_episode()
    elapsed = time.perf_counter() - t0
    gc.collect()
    end = rss_mb()
    print(f"memory: {total} traced calls in episodes of {episode}, resolved and released: "
          f"RSS {start:.1f} MB -> {end:.1f} MB ({end - start:+.1f} MB); "
          f"{total / elapsed / 1e3:.0f}k calls/s including conversion")


def make_scaler():
    def scaled(x):
        return x * 2.5
    return scaled


def bench_resolver(n: int, batch: int = 1_000) -> None:
    """Records converted (and encoded) per second of CPU time, in flusher-sized batches.

    Episodes are released every DEFAULT_MAX_EPISODE_RECORDS records, as the
    flusher does for a program that gives no feedback.
    """
    import msgpack

    workloads = [
        ("fresh list in and out", make_trivial, lambda i: [i]),
        ("int in, float out", make_scaler, lambda i: i + 1000),
    ]
    for label, make, argument in workloads:
        traced = make()
        marking.instrument_function(traced, granularity="call")
        resolver = provenance.Resolver()
        records = events_total = episode_records = 0
        converting = encoding = packing = 0.0
        for _ in range(max(1, n // batch)):
            for i in range(batch):
                traced(argument(i))
            drained = buffers.drain()
            count = sum(len(chunk) for _, chunk in drained)
            t0 = time.thread_time()
            events = resolver.convert(drained)
            t1 = time.thread_time()
            for start in range(0, len(events), DEFAULT_BATCH_EVENTS):
                encode_message(messages.EventBatch(episode=1, events=events[start:start + DEFAULT_BATCH_EVENTS]))
            t2 = time.thread_time()
            msgpack.packb(events)  # the floor: the very same events, packed by msgpack alone
            t3 = time.thread_time()
            converting += t1 - t0
            encoding += t2 - t1
            packing += t3 - t2
            records += count
            events_total += len(events)
            episode_records += count
            if episode_records >= DEFAULT_MAX_EPISODE_RECORDS:
                resolver.release()
                episode_records = 0
        resolver.release()
        both = converting + encoding
        print(f"resolver, {label}: {records} records -> {events_total} events; "
              f"convert {records / converting / 1e3:.0f}k records/s, convert + encode {records / both / 1e3:.0f}k "
              f"records/s (goal >= 500k); msgpack alone packs them at {records / packing / 1e3:.0f}k records/s: "
              f"convert + encode takes {both / packing:.1f}x its time (CPU time, batches of {2 * batch} records)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (for a smoke run)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    buffers.set_limit(10_000_000)  # the benchmark drains itself; never drop
    print(f"Python {sys.version.split()[0]}")
    bench_call_mode(int(200_000 * scale))
    bench_op_mode(int(20_000 * scale))
    bench_string_building(int(20_000 * scale))
    bench_memory(int(1_000_000 * scale), 10_000)
    bench_resolver(int(100_000 * scale))


if __name__ == "__main__":
    main()
