"""The flusher: records in the buffers reach the daemon, in order, bounded, and counted when lost.

Records go into the real per-thread buffers (`tracer.buffers`), exactly as
the hooks append them, and come out at a real Unix-socket server. The
resolver is replaced by `to_events` below (the flusher takes any converter;
the real one is tested by the rewriter's tests and in test_runtime*).
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

import pytest

from protocol import messages as m
from tests.tracer.test_transport import make_hello
from tests.tracer.test_transport_server import ProtocolServer
from tracer import buffers
from tracer.flusher import DefinitionTracker, Flusher
from tracer.transport import Transport

FUNC = 11
TRAINABLE_FUNC = 12
SITE = 21


def to_events(drained):
    """Raw hook records -> wire events, the way the resolver shapes them (values dropped)."""
    events = []
    for _thread, records in drained:
        for record in records:
            if record[0] == "call":
                events.append(["call", record[1], record[2], None, [], 1, 0])
            elif record[0] == "op":
                events.append(["op", record[1], None, record[2], "add", [], 5])
            else:
                events.append(list(record))
    return events


class Registries:
    """Definitions as the marking and params registries would give them."""

    def __init__(self):
        self.functions = {
            FUNC: function_def(FUNC, "f", trainable=False),
            TRAINABLE_FUNC: function_def(TRAINABLE_FUNC, "g", trainable=True),
        }
        self.sites = {SITE: m.SiteDef(id=SITE, func=FUNC, op="add", line=3, col=4, text="a + b")}
        self.params = [m.ParamDef(name="prompt", type="str", value="hi", kind="global")]
        self.generation = 1

    def function_def(self, func_id):
        return self.functions.get(func_id)

    def site_def(self, site_id):
        return self.sites.get(site_id)

    def param_generation(self):
        return self.generation

    def param_defs(self):
        return self.generation, list(self.params)

    def trainable_function_ids(self):
        return [fid for fid, d in self.functions.items() if d.trainable]


def function_def(func_id, name, trainable):
    return m.FunctionDef(id=func_id, module="app", qualname=name, source=f"def {name}(): pass",
                         doc=None, signature="()", file="app.py", line=1, trainable=trainable)


def flushed(flusher, transport, timeout=2.0):
    """Flush, then make a round trip: the daemon has read everything sent before the reply."""
    done = flusher.flush(timeout)
    if done:
        transport.request(m.StatusQuery(request_id=transport.next_request_id()), timeout)
    return done


def record_calls(n, func=FUNC, start=1):
    buf = buffers.thread_buffer()
    for op in range(start, start + n):
        buf.append(("call", op, func, None, (), 1, 0))


@pytest.fixture
def sock_path():
    return os.path.join(tempfile.mkdtemp(prefix="tl-"), "d.sock")


@pytest.fixture
def server(sock_path):
    with ProtocolServer(sock_path) as srv:
        yield srv


@pytest.fixture
def transport(server, sock_path):
    t = Transport(sock_path, make_hello)
    t.connect()
    yield t
    t.close()


@pytest.fixture(autouse=True)
def clean_buffers():
    buffers.drain()
    buffers.take_dropped()
    limit = buffers.limit()
    yield
    buffers.set_overflow_handler(None)
    buffers.set_limit(limit)
    buffers.drain()
    buffers.take_dropped()


class Released:
    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1


@pytest.fixture
def make_flusher(transport):
    made = []

    def make(**options):
        options.setdefault("drain", buffers.drain)
        options.setdefault("convert", to_events)
        options.setdefault("release", Released())
        options.setdefault("definitions", DefinitionTracker(Registries()))
        options.setdefault("take_dropped", buffers.take_dropped)
        options.setdefault("suppress_tracing", buffers.suppress_current_thread)
        options.setdefault("interval", 0.02)
        flusher = Flusher(options.pop("transport", transport), **options)
        flusher.start()
        made.append(flusher)
        return flusher

    yield make
    for flusher in made:
        flusher.stop(1.0)


def test_recorded_calls_arrive_as_event_batches_of_the_current_episode(server, transport, make_flusher):
    flusher = make_flusher()
    record_calls(3)
    assert flushed(flusher, transport, 2)
    batches = server.messages(m.EventBatch)
    assert [e[1] for b in batches for e in b.events] == [1, 2, 3]
    assert {b.episode for b in batches} == {1}
    assert flusher.stats.events_sent == 3 and flusher.stats.pending_events == 0


def test_definitions_precede_the_first_events_that_need_them(server, transport, make_flusher):
    flusher = make_flusher()
    record_calls(1)
    buffers.thread_buffer().append(("op", 2, SITE))
    assert flushed(flusher, transport, 2)
    kinds = [type(msg).__name__ for msg in server.messages()]
    assert kinds.index("Definitions") < kinds.index("EventBatch")
    definitions = server.messages(m.Definitions)  # one or two: a cycle may run between the appends
    assert sorted(f.id for d in definitions for f in d.functions) == [FUNC, TRAINABLE_FUNC]
    assert [s.id for d in definitions for s in d.sites] == [SITE]
    assert [p.name for d in definitions for p in d.params] == ["prompt"]


def test_each_definition_is_sent_once_per_connection(server, transport, make_flusher):
    flusher = make_flusher()
    record_calls(2)
    assert flushed(flusher, transport, 2)
    record_calls(2, start=3)
    assert flushed(flusher, transport, 2)
    assert len(server.messages(m.Definitions)) == 1


def test_changed_parameters_are_sent_again(server, transport, make_flusher):
    registries = Registries()
    flusher = make_flusher(definitions=DefinitionTracker(registries))
    record_calls(1)
    assert flushed(flusher, transport, 2)
    registries.params = [m.ParamDef(name="prompt", type="str", value="better", kind="global")]
    registries.generation += 1
    record_calls(1, start=2)
    assert flushed(flusher, transport, 2)
    sent = [p.value for d in server.messages(m.Definitions) for p in d.params]
    assert sent == ["hi", "better"]


def test_new_connection_gets_every_definition_again_then_a_new_episode(server, transport, make_flusher):
    released = Released()
    flusher = make_flusher(release=released)
    record_calls(2)
    assert flushed(flusher, transport, 2)
    server.kill()
    server.wait_for(lambda: not transport.connected)
    server.start()
    server.wait_for(lambda: transport.connected)
    record_calls(1, start=3)
    assert flushed(flusher, transport, 2)
    second = server.messages(client=2)
    assert isinstance(second[0], m.Definitions)
    assert {f.id for f in second[0].functions} == {FUNC, TRAINABLE_FUNC}
    assert released.count == 1 and flusher.episode == 2


def test_new_episode_closes_the_old_one_and_releases_its_values(server, transport, make_flusher):
    released = Released()
    flusher = make_flusher(release=released)
    record_calls(2)
    assert flusher.new_episode(timeout=2) == 2
    record_calls(1, start=3)
    assert flushed(flusher, transport, 2)
    kinds = [(type(msg).__name__, getattr(msg, "episode", None)) for msg in server.messages() if isinstance(msg, (m.EventBatch, m.EpisodeClosed))]
    assert kinds == [("EventBatch", 1), ("EpisodeClosed", 1), ("EventBatch", 2)]
    assert released.count == 1


def test_episode_is_rolled_when_it_grows_past_the_limit_without_feedback(server, transport, make_flusher):
    released = Released()
    flusher = make_flusher(release=released, max_episode_records=10)
    record_calls(11)
    assert flushed(flusher, transport, 2)
    assert flusher.episode == 2 and flusher.stats.auto_rolled == 1
    assert released.count == 1
    assert server.messages(m.EpisodeClosed)[0].episode == 1


def test_feedback_resets_the_auto_roll_count(server, transport, make_flusher):
    flusher = make_flusher(max_episode_records=10)
    record_calls(8)
    assert flushed(flusher, transport, 2)
    flusher.note_feedback()
    record_calls(8, start=9)
    assert flushed(flusher, transport, 2)
    assert flusher.episode == 1


def test_large_drains_are_split_into_bounded_batches(server, transport, make_flusher):
    flusher = make_flusher(batch_events=100)
    record_calls(250)
    assert flushed(flusher, transport, 2)
    assert [len(b.events) for b in server.messages(m.EventBatch)] == [100, 100, 50]


def test_a_converter_error_counts_the_records_as_dropped_and_the_flusher_survives(server, transport, make_flusher):
    calls = {"n": 0}

    def flaky(drained):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("resolver bug")
        return to_events(drained)

    flusher = make_flusher(convert=flaky)
    record_calls(4)
    flusher.flush(2)
    record_calls(2, start=5)
    assert flushed(flusher, transport, 2)
    assert flusher.stats.dropped == 4 and flusher.stats.internal_errors == 1
    assert "resolver bug" in flusher.stats.last_error
    batches = server.messages(m.EventBatch)
    assert sum(b.dropped for b in batches) == 4
    assert [e[1] for b in batches for e in b.events] == [5, 6]


def test_the_flusher_thread_itself_is_never_traced(server, transport, make_flusher):
    seen = []

    def converter_that_runs_traced_code(drained):
        seen.append(buffers.is_suppressed())
        return to_events(drained)

    flusher = make_flusher(convert=converter_that_runs_traced_code)
    record_calls(1)
    assert flushed(flusher, transport, 2)
    assert seen == [True]


def test_slow_daemon_bounds_memory_and_reports_what_was_dropped(server, transport, make_flusher):
    """The daemon stops reading: the program keeps running, memory stays bounded, drops are counted."""
    buffers.set_limit(500)
    flusher = make_flusher(max_pending_bytes=60_000, batch_events=500)
    buffers.set_overflow_handler(lambda buf: flusher.backpressure(0.01))
    server.paused.set()
    started = time.monotonic()
    for i in range(200):
        record_calls(500, start=i * 500 + 1)  # 100k records, far more than the socket buffer holds
        buf = buffers.thread_buffer()
        if len(buf) > buffers.limit():
            buffers.overflow(buf)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"the program was held up {elapsed:.1f} s"
    assert buffers.pending() <= 500
    assert flusher.stats.pending_bytes <= 60_000
    server.paused.clear()
    assert flushed(flusher, transport, 5)
    received = sum(len(b.events) for b in server.messages(m.EventBatch))
    reported = sum(b.dropped for b in server.messages(m.EventBatch))
    assert flusher.stats.dropped > 0
    assert received + reported == 100_000
    assert reported == flusher.stats.dropped


def test_flush_gives_up_after_its_timeout_when_the_daemon_stalls(server, transport, make_flusher):
    flusher = make_flusher()
    server.paused.set()
    for i in range(100):  # ~ a few MB: more than the socket buffers hold
        buffers.thread_buffer().append(("bulk", "x" * 50_000))
    started = time.monotonic()
    assert flusher.flush(0.3) is False
    assert time.monotonic() - started < 1.0
    server.paused.clear()


def test_flush_without_a_running_thread_returns_false(transport):
    flusher = Flusher(transport, drain=buffers.drain, convert=to_events, release=Released(),
                      definitions=DefinitionTracker(Registries()))
    assert flusher.flush(0.1) is False


def test_events_recorded_while_disconnected_are_sent_after_reconnecting(server, transport, make_flusher):
    flusher = make_flusher()
    server.kill()
    server.wait_for(lambda: not transport.connected)
    record_calls(5)
    assert flusher.flush(0.5) is False  # nowhere to send them yet
    assert flusher.stats.pending_events == 5
    server.start()
    server.wait_for(lambda: transport.connected)
    assert flushed(flusher, transport, 2)
    assert [e[1] for b in server.messages(m.EventBatch) for e in b.events] == [1, 2, 3, 4, 5]


def test_a_batch_over_the_frame_limit_is_sent_in_smaller_frames(server, transport, make_flusher):
    flusher = make_flusher(batch_events=64)
    big = "x" * (1 << 20)
    buf = buffers.thread_buffer()
    for op in range(20):  # 20 MiB in one batch: over the 16 MiB frame limit
        buf.append(("big", op, big))
    assert flushed(flusher, transport, 10)
    batches = server.messages(m.EventBatch)
    assert [e[1] for b in batches for e in b.events] == list(range(20))
    assert len(batches) >= 2 and flusher.stats.dropped == 0


def test_an_event_msgpack_cannot_carry_is_dropped_and_counted_without_blocking_the_rest(server, transport, make_flusher):
    flusher = make_flusher()
    buf = buffers.thread_buffer()
    buf.append(("call", 1, FUNC, None, (), 1, 0))
    buf.append(("bad", 2, {1, 2}))  # a set: not part of the wire format
    buf.append(("call", 3, FUNC, None, (), 1, 0))
    assert flushed(flusher, transport, 5)
    batches = server.messages(m.EventBatch)
    assert [e[1] for b in batches for e in b.events] == [1, 3]
    assert flusher.stats.dropped == 1 and sum(b.dropped for b in batches) == 1
    assert flusher.stats.internal_errors == 1


def test_backpressure_releases_the_program_once_the_buffers_are_drained_not_converted(server, transport, make_flusher):
    def slow(drained):
        time.sleep(1.0)
        return to_events(drained)

    flusher = make_flusher(convert=slow, interval=5.0)
    record_calls(10)
    started = time.monotonic()
    flusher.backpressure(timeout=3.0)
    assert time.monotonic() - started < 0.8  # well before the conversion ends
    assert buffers.pending() == 0


def test_backpressure_gives_up_after_its_timeout_when_the_flusher_is_busy_and_the_backlog_full(
        server, transport, make_flusher):
    release = threading.Event()
    converting = threading.Event()

    def stuck(drained):
        converting.set()
        release.wait(5)
        return to_events(drained)

    flusher = make_flusher(convert=stuck, interval=5.0, slice_records=1, max_backlog_records=1)
    record_calls(2)
    flusher.backpressure(timeout=1.0)  # drained; the flusher sticks converting the first record
    assert converting.wait(2)
    record_calls(1, start=3)
    started = time.monotonic()
    flusher.backpressure(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert buffers.pending() == 1
    release.set()


def test_backpressure_does_not_wait_for_a_busy_flusher_while_the_backlog_has_room(server, transport, make_flusher):
    release = threading.Event()
    converting = threading.Event()

    def stuck(drained):
        converting.set()
        release.wait(5)
        return to_events(drained)

    flusher = make_flusher(convert=stuck, interval=5.0)
    record_calls(1)
    flusher.backpressure(timeout=1.0)
    assert converting.wait(2)          # the flusher is stuck in convert (a GC pause, a slow repr...)
    record_calls(1, start=2)
    started = time.monotonic()
    flusher.backpressure(timeout=1.0)
    assert time.monotonic() - started < 0.5
    assert buffers.pending() == 0
    release.set()
    assert flushed(flusher, transport, 5)
    assert [e[1] for b in server.messages(m.EventBatch) for e in b.events] == [1, 2]


def test_a_parameter_msgpack_cannot_carry_does_not_keep_the_other_definitions_from_the_daemon(server, transport, make_flusher):
    registries = Registries()
    registries.params.append(m.ParamDef(name="weird", type="set", value={1, 2}, kind="global"))
    flusher = make_flusher(definitions=DefinitionTracker(registries))
    record_calls(1)
    assert flushed(flusher, transport, 5)
    definitions = server.messages(m.Definitions)
    assert sorted(f.id for d in definitions for f in d.functions) == [FUNC, TRAINABLE_FUNC]
    assert [p.name for d in definitions for p in d.params] == ["prompt"]
    assert flusher.stats.internal_errors == 1 and "weird" not in str(definitions)
    assert len(called_funcs_of(server)) == 1


def called_funcs_of(server):
    return [e for b in server.messages(m.EventBatch) for e in b.events if e[0] == "call"]


# --- conversion in slices ---------------------------------------------------------


def test_a_large_drain_is_converted_in_slices_and_arrives_in_order(server, transport, make_flusher):
    sizes = []

    def counting(drained):
        sizes.append(sum(len(records) for _, records in drained))
        return to_events(drained)

    flusher = make_flusher(convert=counting, slice_records=100, interval=5.0)
    record_calls(250)
    assert flushed(flusher, transport, 2)
    assert sizes == [100, 100, 50]
    assert [e[1] for b in server.messages(m.EventBatch) for e in b.events] == list(range(1, 251))


def slow_converter(per_slice):
    def convert(drained):
        time.sleep(per_slice)
        return to_events(drained)
    return convert


def test_records_taken_during_a_long_conversion_arrive_after_the_earlier_ones(server, transport, make_flusher):
    flusher = make_flusher(convert=slow_converter(0.05), slice_records=10, interval=5.0)
    record_calls(100)                      # ten slices: half a second of converting
    flusher.backpressure(timeout=1.0)      # drained at once; the flusher converts from now on
    time.sleep(0.1)
    record_calls(10, start=101)
    flusher.backpressure(timeout=1.0)
    assert buffers.pending() == 0
    assert flushed(flusher, transport, 5)
    assert [e[1] for b in server.messages(m.EventBatch) for e in b.events] == list(range(1, 111))


def test_backpressure_waits_while_the_backlog_is_full(server, transport, make_flusher):
    flusher = make_flusher(convert=slow_converter(0.05), slice_records=10, max_backlog_records=50,
                           interval=5.0)
    record_calls(100)
    flusher.backpressure(timeout=1.0)
    time.sleep(0.1)                        # the flusher's cycle is under way
    record_calls(10, start=101)
    started = time.monotonic()
    flusher.backpressure(timeout=0.1)      # 90 records still to convert: over the bound
    assert time.monotonic() - started >= 0.1
    assert buffers.pending() == 10          # left for the buffer's own overflow rule
    assert flushed(flusher, transport, 5)
    assert [e[1] for b in server.messages(m.EventBatch) for e in b.events] == list(range(1, 111))


def test_a_converter_error_loses_only_its_slice(server, transport, make_flusher):
    calls = {"n": 0}

    def fails_once(drained):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("resolver bug")
        return to_events(drained)

    flusher = make_flusher(convert=fails_once, slice_records=10, interval=5.0)
    record_calls(30)
    assert flushed(flusher, transport, 2)
    assert [e[1] for b in server.messages(m.EventBatch) for e in b.events] == list(range(1, 11)) + list(range(21, 31))
    assert flusher.stats.dropped == 10
    assert sum(b.dropped for b in server.messages(m.EventBatch)) == 10
