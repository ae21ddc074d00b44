"""Call mode: entry, return, yield and exception events, and how calls nest.

These run in-process: the test drains the per-thread buffers around the
code under test and reads the raw records the hooks appended.
"""
from __future__ import annotations

import asyncio
import marshal
import sys
import threading

import pytest

from tracer import buffers, hooks, marking, provenance
from tracer.marking import bundle

@pytest.fixture(autouse=True)
def no_swallowed_hook_errors():
    """Hooks never raise into the program; they count what they swallow. It must stay 0."""
    from tracer import hooks as _hooks
    before = _hooks.errors()
    yield
    assert _hooks.errors() == before, "a hook swallowed an internal error"



def records_of(fn, *args):
    buffers.drain()
    result = fn(*args)
    recs = [r for _, chunk in buffers.drain() for r in chunk]
    return result, recs


def calls(recs):
    """op -> (function name, parent op) for every call record."""
    names = {}
    for r in recs:
        if r[0] == "call":
            names[r[1]] = (marking.registry[r[2]].qualname.rsplit(".", 1)[-1], r[3])
    return names


def parent_name(tree, op):
    parent = tree[op][1]
    return None if parent is None else tree[parent][0]


@bundle()
def leaf(x):
    return x + 1


@bundle()
def middle(x):
    return leaf(x) * 2


@bundle()
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_nested_call_names_the_enclosing_call_as_parent():
    result, recs = records_of(middle, 3)
    tree = calls(recs)
    assert result == 8
    leaf_ops = [op for op, (name, _) in tree.items() if name == "leaf"]
    assert [parent_name(tree, op) for op in leaf_ops] == ["middle"]
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "middle"] == [None]


def test_recursive_calls_nest_under_their_own_caller():
    _, recs = records_of(fib, 4)
    tree = calls(recs)
    rets = {r[1]: r[2] for r in recs if r[0] == "ret"}
    args = {r[1]: r[4][0] for r in recs if r[0] == "call"}
    for op, (name, parent) in tree.items():
        if parent is not None:
            assert args[op] in (args[parent] - 1, args[parent] - 2)
    assert rets[min(tree)] == 3
    assert len(tree) == 9  # fib(4) makes 9 calls


def test_return_record_carries_the_returned_object_itself():
    marker = object()

    @bundle()
    def give():
        return marker

    _, recs = records_of(give)
    assert [r[2] for r in recs if r[0] == "ret"] == [marker]


def test_calls_in_concurrent_threads_nest_within_their_own_thread():
    barrier = threading.Barrier(2)

    @bundle()
    def inner(tag):
        barrier.wait(timeout=5)  # both threads are inside `outer` at the same time
        return tag

    @bundle()
    def outer(tag):
        return inner(tag)

    def run():
        threads = [threading.Thread(target=outer, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    buffers.drain()
    run()
    thread_of = {}
    calls_ = {}
    for ident, chunk in buffers.drain():
        for r in chunk:
            if r[0] == "call":
                calls_[r[1]] = r
                thread_of[r[1]] = ident
    inner_ops = [op for op, r in calls_.items() if marking.registry[r[2]].qualname.endswith("inner")]
    assert len(inner_ops) == 2
    for op in inner_ops:
        rec = calls_[op]
        parent = calls_[rec[3]]
        assert parent[4] == rec[4]                 # same tag: its own thread's outer
        assert thread_of[rec[3]] == thread_of[op]  # recorded by the same thread


def test_calls_in_interleaved_asyncio_tasks_nest_within_their_own_task():
    @bundle()
    async def inner(tag):
        await asyncio.sleep(0)
        return tag

    @bundle()
    async def outer(tag):
        await asyncio.sleep(0)
        first = await inner(tag)
        await asyncio.sleep(0)
        return first + await inner(tag)

    async def main():
        return await asyncio.gather(outer("a"), outer("b"), outer("c"))

    result, recs = records_of(asyncio.run, main())
    assert result == ["aa", "bb", "cc"]
    calls_ = {r[1]: r for r in recs if r[0] == "call"}
    inner_calls = [r for r in calls_.values() if marking.registry[r[2]].qualname.endswith("inner")]
    assert len(inner_calls) == 6
    for rec in inner_calls:
        assert calls_[rec[3]][4] == rec[4]


@bundle()
def numbers(n):
    for i in range(n):
        yield leaf(i)


@bundle()
def consumer(n):
    out = []
    for v in numbers(n):
        out.append(middle(v))  # called while the generator is suspended
    return out


def test_generator_body_calls_nest_under_the_generator_and_consumer_calls_do_not():
    result, recs = records_of(consumer, 2)
    tree = calls(recs)
    assert result == [4, 6]
    by_name = {}
    for op, (name, _) in tree.items():
        by_name.setdefault(name, []).append(parent_name(tree, op))
    assert by_name["numbers"] == ["consumer"]
    assert by_name["middle"] == ["consumer", "consumer"]
    assert sorted(by_name["leaf"]) == ["middle", "middle", "numbers", "numbers"]


def test_each_yielded_value_is_a_ret_of_the_generator_call():
    _, recs = records_of(lambda: list(numbers(3)))
    gen_op = next(r[1] for r in recs if r[0] == "call" and marking.registry[r[2]].qualname == "numbers")
    assert [r[2] for r in recs if r[0] == "ret" and r[1] == gen_op] == [1, 2, 3]


@bundle()
def delegating(n):
    yield from numbers(n)


@bundle()
def delegation_consumer(n):
    return [middle(v) for v in delegating(n)]


def test_calls_made_while_a_generator_is_suspended_in_yield_from_nest_under_the_consumer():
    _, recs = records_of(delegation_consumer, 2)
    tree = calls(recs)
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "middle"] == [
        "delegation_consumer", "delegation_consumer"]
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "numbers"] == ["delegating"]


@bundle()
def delegating_then_calls(n):
    yield from numbers(n)
    yield leaf(100)  # after the delegation: under this generator again


def test_calls_after_a_yield_from_completes_nest_under_the_delegating_generator():
    def run():
        return list(delegating_then_calls(1))

    result, recs = records_of(run)
    tree = calls(recs)
    assert result == [1, 101]
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "leaf"] == [
        "numbers", "delegating_then_calls"]


def test_generator_resumed_by_another_caller_nests_later_calls_under_its_own_call():
    gen = numbers(3)

    @bundle()
    def first_step():
        return next(gen)

    @bundle()
    def second_step():
        return next(gen)

    def run():
        return first_step(), second_step()

    result, recs = records_of(run)
    tree = calls(recs)
    assert result == (1, 2)
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "numbers"] == ["first_step"]
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "leaf"] == ["numbers", "numbers"]


@bundle()
def fails(x):
    y = x + 1
    raise ValueError(f"bad value {y}")


@bundle()
def calls_fails(x):
    return fails(x)


def test_exception_leaving_marked_calls_is_an_exc_record_at_every_level():
    def run():
        try:
            calls_fails(1)
        except ValueError as e:
            return e

    err, recs = records_of(run)
    excs = [r for r in recs if r[0] == "exc"]
    assert [r[2] for r in excs] == [err, err]
    assert not [r for r in recs if r[0] == "ret"]


def test_exc_event_traceback_marks_the_failing_line_of_the_marked_source():
    def run():
        try:
            fails(1)
        except ValueError:
            pass

    _, recs = records_of(run)
    resolver = provenance.Resolver()
    events = resolver.convert([(0, recs)])
    (exc,) = [e for e in events if e[0] == "exc"]
    _, _, type_name, message, text, _ = exc
    assert type_name == "ValueError"
    assert message == "bad value 2"
    assert "Traceback (most recent call last)" in text
    marked = [line for line in text.splitlines() if line.startswith("-->")]
    assert len(marked) == 1
    assert 'raise ValueError(f"bad value {y}")' in marked[0]
    assert "In marked function" in text and "fails" in text


def test_exception_caught_inside_the_marked_function_is_not_reported():
    @bundle()
    def recovers():
        try:
            raise KeyError("x")
        except KeyError:
            return "ok"

    result, recs = records_of(recovers)
    assert result == "ok"
    assert [r[0] for r in recs] == ["call", "ret"]


def test_closing_a_suspended_generator_is_not_an_error():
    def run():
        gen = numbers(5)
        next(gen)
        gen.close()

    _, recs = records_of(run)
    assert not [r for r in recs if r[0] == "exc"]


def test_exception_thrown_into_a_generator_and_caught_lets_it_continue():
    @bundle()
    def tolerant():
        while True:
            try:
                yield "waiting"
            except KeyError:
                yield "recovered"

    def run():
        gen = tolerant()
        return next(gen), gen.throw(KeyError()), next(gen)

    result, recs = records_of(run)
    assert result == ("waiting", "recovered", "waiting")
    assert [r[2] for r in recs if r[0] == "ret"] == ["waiting", "recovered", "waiting"]


def test_nothing_is_recorded_in_a_suppressed_thread():
    def run():
        with hooks.suppressed():
            return middle(1)

    result, recs = records_of(run)
    assert result == 4
    assert recs == []


def test_nothing_is_recorded_while_tracing_is_disabled_and_nesting_recovers_after():
    hooks.disable()
    try:
        result, recs = records_of(middle, 1)
    finally:
        hooks.enable()
    assert result == 4 and recs == []
    _, recs = records_of(middle, 1)
    tree = calls(recs)
    assert sorted(parent_name(tree, op) or "-" for op in tree) == ["-", "middle"]
    assert hooks.current_op() is None


def test_instrumented_frame_has_no_extra_local_names():
    @bundle()
    def names(a, *rest, k=1, **kw):
        b = a
        return sorted(locals())

    assert names(1, 2, k=3, z=4) == ["a", "b", "k", "kw", "rest"]


def test_instrumented_code_is_marshallable_and_reaches_hooks_through_globals():
    @bundle()
    def sample(x):
        return [x for _ in range(2)]

    code = sample.__code__
    assert marshal.loads(marshal.dumps(code)).co_names == code.co_names
    hook_names = [n for n in code.co_names if "@" in n]
    assert hook_names and all(n.startswith("__@trace_") for n in hook_names)
    assert all(not callable(c) for c in code.co_consts if not hasattr(c, "co_code"))


def test_line_numbers_of_instrumented_code_are_unchanged():
    def plain(x):
        y = x + 1
        return y

    before = [line for _, _, line in plain.__code__.co_lines() if line is not None]
    bundle()(plain)
    after = [line for _, _, line in plain.__code__.co_lines() if line is not None]
    assert set(after) == set(before)
    assert plain.__code__.co_firstlineno == plain.__code__.co_firstlineno


@bundle()
def tool(tag):
    return tag.upper()


async def unmarked_step(tag):
    await asyncio.sleep(0)  # suspends the whole chain of awaits
    return tool(tag)        # a marked plain call after the resumption


@bundle()
async def agent(tag):
    first = await unmarked_step(tag)
    return first + tool(tag)


def test_plain_calls_inside_an_unmarked_coroutine_nest_under_the_marked_coroutine_awaiting_it():
    # Plain functions and coroutines keep their tokens in different places on
    # 3.10 (thread slot / ContextVar): the innermost of the two must win, also
    # after a suspension with tasks interleaved.
    async def main():
        return await asyncio.gather(agent("a"), agent("b"))

    result, recs = records_of(asyncio.run, main())
    assert result == ["AA", "BB"]
    tree = calls(recs)
    tool_parents = [parent_name(tree, op) for op, (n, _) in tree.items() if n == "tool"]
    assert tool_parents == ["agent"] * 4
    by_op = {r[1]: r for r in recs if r[0] == "call"}
    for op, (n, parent) in tree.items():
        if n == "tool":
            assert by_op[op][4][0].upper() == by_op[parent][4][0].upper()  # its own task's agent


@bundle()
def stepper(gen):
    return next(gen)


@bundle()
def plain_consumer(gen):
    return [stepper(gen), tool("x"), stepper(gen)]


def test_a_plain_call_between_two_resumptions_of_a_generator_nests_under_its_caller():
    def run():
        return plain_consumer(delegating(2))

    result, recs = records_of(run)
    tree = calls(recs)
    assert result == [1, "X", 2]
    assert [parent_name(tree, op) for op, (n, _) in tree.items() if n == "tool"] == ["plain_consumer"]
    assert sorted(parent_name(tree, op) for op, (n, _) in tree.items() if n == "leaf") == ["numbers", "numbers"]
