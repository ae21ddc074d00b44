"""Per-thread buffers: nothing lost on drain, bounded with an overflow handler, suppressible."""
from __future__ import annotations

import threading

import pytest

from tracer import buffers, hooks
from tracer.marking import bundle


@pytest.fixture(autouse=True)
def clean_buffers():
    buffers.drain()
    buffers.take_dropped()
    limit = buffers.limit()
    yield
    buffers.set_limit(limit)
    buffers.set_overflow_handler(None)
    buffers.drain()
    buffers.take_dropped()


@bundle()
def traced(x):
    return x


def test_drain_loses_nothing_while_threads_keep_appending():
    per_thread, n_threads = 20_000, 4
    start = threading.Barrier(n_threads + 1)

    def produce(tag):
        buf = buffers.thread_buffer()
        start.wait()
        for i in range(per_thread):
            buf.append((tag, i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    start.wait()
    got: dict = {}
    while any(t.is_alive() for t in threads):
        for _, chunk in buffers.drain():
            for tag, i in chunk:
                got.setdefault(tag, []).append(i)
    for t in threads:
        t.join()
    for _, chunk in buffers.drain():
        for tag, i in chunk:
            got.setdefault(tag, []).append(i)
    assert {tag: len(v) for tag, v in got.items()} == {t: per_thread for t in range(n_threads)}
    assert all(v == list(range(per_thread)) for v in got.values())  # in order, per thread


def test_drain_reports_each_threads_records_under_that_threads_ident():
    idents = {}

    def run():
        idents["worker"] = threading.get_ident()
        traced(1)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    drained = buffers.drain()
    assert [ident for ident, chunk in drained if chunk] == [idents["worker"]]


def test_buffers_of_finished_threads_are_forgotten_once_drained():
    t = threading.Thread(target=traced, args=(1,))
    t.start()
    t.join()
    buffers.drain()
    assert buffers.drain() == []
    assert buffers.pending() == 0


def test_default_overflow_handler_drops_and_counts():
    buffers.set_limit(10)
    for i in range(8):
        traced(i)  # 2 records per call
    assert buffers.take_dropped() > 0
    assert buffers.take_dropped() == 0  # reset by the first call
    assert len(buffers.thread_buffer()) <= 10


def test_overflow_handler_can_apply_back_pressure_without_dropping():
    seen = []

    def flush_now(buf):
        n = len(buf)
        seen.extend(buf[:n])
        del buf[:n]

    buffers.set_limit(10)
    buffers.set_overflow_handler(flush_now)
    for i in range(20):
        traced(i)
    assert buffers.take_dropped() == 0
    assert len(seen) + len(buffers.thread_buffer()) == 40


def test_overflow_handler_that_raises_never_reaches_the_program():
    def broken(buf):
        raise RuntimeError("handler bug")

    buffers.set_limit(4)
    buffers.set_overflow_handler(broken)
    assert [traced(i) for i in range(10)] == list(range(10))
    assert buffers.take_dropped() > 0


def test_limit_must_be_a_positive_int():
    with pytest.raises(ValueError, match="positive int"):
        buffers.set_limit(0)


def test_suppressed_block_records_nothing_and_ends_cleanly():
    with buffers.suppressed():
        assert buffers.is_suppressed()
        traced(1)
    assert not buffers.is_suppressed()
    assert buffers.drain() == [] or all(not chunk for _, chunk in buffers.drain())
    traced(2)
    assert [r[0] for _, chunk in buffers.drain() for r in chunk] == ["call", "ret"]


def test_a_suppressed_thread_stays_suppressed():
    out = {}

    def runtime_thread():
        buffers.suppress_current_thread()
        traced(1)
        out["buf"] = buffers.thread_buffer()

    t = threading.Thread(target=runtime_thread)
    t.start()
    t.join()
    assert out["buf"] is None
    assert all(not chunk for _, chunk in buffers.drain())


def test_hooks_suppressed_is_the_same_switch():
    with hooks.suppressed():
        traced(1)
    assert all(not chunk for _, chunk in buffers.drain())


def test_ctrl_c_arriving_inside_a_hook_still_stops_the_program():
    def interrupted(buf):
        raise KeyboardInterrupt  # as a SIGINT handler would, at any instruction

    buffers.set_limit(1)
    buffers.set_overflow_handler(interrupted)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(3):  # the bound is checked when a call starts
            traced(1)
