"""Op mode: a result stored straight into a local (`x = a[i]`) is one hook call.

The op's hook puts the result's Ref into the frame's shadow for that local
itself, and the STORE_FAST runs untouched with no hook of its own (see
`tracer/rewrite/ops.py`). These check that the shadow stays exact through
that shortcut: shared small ints and interned strings (identity cannot tell
them apart), loops, comprehensions, generators, `del`, exceptions, and a
local reassigned from one kind of source after another. Each program is
also run uninstrumented: tracing never changes what it computes.
"""
from __future__ import annotations

import dis

import pytest

from tracer import buffers, marking, provenance
from tracer.marking import bundle


@pytest.fixture(autouse=True)
def no_swallowed_hook_errors():
    """Hooks never raise into the program; they count what they swallow. It must stay 0."""
    from tracer import hooks as _hooks
    before = _hooks.errors()
    yield
    assert _hooks.errors() == before, "a hook swallowed an internal error"


def trace(fn, *args):
    buffers.drain()
    result = fn(*args)
    events = provenance.Resolver().convert(buffers.drain())
    return result, events


def op_mode(fn):
    """`fn` and an op-mode traced copy of it (same code, same globals)."""
    import types
    traced = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    traced.__qualname__ = fn.__qualname__
    marking.instrument_function(traced, granularity="op")
    return fn, traced


def same_output(fn, *args):
    """Run `fn` plain and traced; both must return the same; the traced run's (result, events)."""
    plain, traced = op_mode(fn)
    expected = plain(*args)
    result, events = trace(traced, *args)
    assert result == expected
    return result, events


def op_events(events, opname):
    return [e for e in events if e[0] == "op" and e[4] == opname]


def call_events(events, suffix):
    return [e for e in events if e[0] == "call" and marking.registry[e[2]].qualname.endswith(suffix)]


def input_nodes(call_event):
    return [node for _, node in call_event[4]]


def ret_node(events, op):
    return next(e[2] for e in events if e[0] == "ret" and e[1] == op)


def producer_of(events, node):
    for e in events:
        if e[0] == "ret" and e[2] == node:
            return ("ret", e[1])
        if e[0] == "op" and e[6] == node:
            return ("op", e[1], e[4])
    return None


def hooks_called(fn):
    """The names of the hook globals the op-mode rewrite of `fn` loads, in order."""
    _, traced = op_mode(fn)
    names = []
    for ins in dis.get_instructions(traced):
        if ins.opname == "LOAD_GLOBAL" and "__@trace_" in str(ins.argval):
            names.append(str(ins.argval).split("__@trace_")[1].split()[0].rstrip(")'\""))
    return names


# --- the shortcut is taken ---------------------------------------------------------


def stores_a_subscript(a):
    x = a[0]
    return x


def test_a_result_stored_into_a_local_costs_one_hook_and_no_store_hook():
    called = hooks_called(stores_a_subscript)
    assert "op_2" in called
    assert "op_store" not in called


def stores_in_place(s, t):
    s = s + t
    return s


def test_x_equals_a_op_b_still_runs_the_op_and_the_store_untouched():
    # pattern C: the hook reads the local after the store (in-place concatenation)
    called = hooks_called(stores_in_place)
    assert "op_stored" in called and "op_2" not in called


# --- shared objects ----------------------------------------------------------------


@pytest.mark.parametrize("value", [5, 0, True, None, "ok", ""], ids=repr)
def test_a_shared_object_stored_from_an_op_links_to_that_op_and_an_equal_literal_does_not(value):
    def run(a):
        x = a[0]          # the very same object as the literal below
        y = value
        return x == value, y == value

    (first, second), events = same_output(run, [value])
    assert first is True and second is True
    (sub,) = op_events(events, "subscript")
    left, right = op_events(events, "eq")
    assert left[5][0] == sub[6]
    assert right[5][0] != sub[6] and producer_of(events, right[5][0]) is None


def test_interned_strings_from_different_sources_keep_their_own_producers():
    def run(d, key):
        a = d[key]          # "ok" from the dict
        b = key.strip()     # "ok" again: the very same (interned) object
        c = "ok"            # the literal
        assert a is b is c
        return a + "1", b + "2", c + "3"

    result, events = same_output(run, {"ok": "ok"}, "ok")
    assert result == ("ok1", "ok2", "ok3")
    (sub,) = op_events(events, "subscript")
    (strip,) = op_events(events, "call")
    a_add, b_add, c_add = op_events(events, "add")
    assert a_add[5][0] == sub[6]
    assert b_add[5][0] == strip[6]
    assert producer_of(events, c_add[5][0]) is None


# --- one local, many sources ----------------------------------------------------------


G = 1


def test_a_local_reassigned_from_different_sources_always_links_to_the_latest():
    @bundle(granularity="op")
    def one():
        return 1

    def run(a, b):
        x = a[0]            # a subscript        (all of these are the same object: 1)
        r1 = x + 0
        x = b               # a local (the argument)
        r2 = x + 0
        x = one()           # a marked call
        r3 = x + 0
        x = abs(b)          # an unmarked call
        r4 = x + 0
        x = -(-b)           # unary ops
        r5 = x + 0
        x = G               # a global
        r6 = x + 0
        x = 1               # a literal
        r7 = x + 0
        return r1 + r2 + r3 + r4 + r5 + r6 + r7

    result, events = same_output(run, [1], 1)
    assert result == 7
    (call,) = call_events(events, ".run")
    (one_call,) = call_events(events, ".one")
    (sub,) = op_events(events, "subscript")
    (abs_call,) = op_events(events, "call")
    neg_outer = op_events(events, "neg")[-1]
    adds = op_events(events, "add")[:7]  # r1 .. r7, then the sum
    lefts = [e[5][0] for e in adds]
    assert lefts[0] == sub[6]
    assert lefts[1] == input_nodes(call)[1]
    assert lefts[2] == ret_node(events, one_call[1])
    assert lefts[3] == abs_call[6]
    assert lefts[4] == neg_outer[6]
    assert lefts[5] not in (sub[6], input_nodes(call)[1], abs_call[6], neg_outer[6])
    assert producer_of(events, lefts[6]) is None
    assert len(set(lefts)) == 7


def test_a_store_from_another_local_shares_that_locals_node():
    def run(a):
        x = a[0]
        y = x
        return y + 1

    _, events = same_output(run, [3])
    (sub,) = op_events(events, "subscript")
    (add,) = op_events(events, "add")
    assert add[5][0] == sub[6]


# --- loops, comprehensions, generators -------------------------------------------------


def test_in_a_loop_each_iteration_links_to_its_own_op():
    def run(a):
        total = 0
        for i in range(len(a)):
            x = a[i]        # always the same object: 7
            total = total + x
        return total

    result, events = same_output(run, [7, 7, 7])
    assert result == 21
    subs = op_events(events, "subscript")
    adds = op_events(events, "add")
    assert len(subs) == len(adds) == 3
    assert [add[5][1] for add in adds] == [sub[6] for sub in subs]
    assert len({sub[6] for sub in subs}) == 3
    # and the running total chains through the loop
    assert adds[1][5][0] == adds[0][6] and adds[2][5][0] == adds[1][6]


def test_a_comprehension_variable_never_takes_the_outer_locals_edge():
    def run(a, b):
        x = a[0]
        doubled = [x * 2 for x in b]   # another x (3.12+: the same slot, saved and restored)
        return x - 1, doubled

    result, events = same_output(run, [4], [4, 4])
    assert result == (3, [8, 8])
    (sub,) = op_events(events, "subscript")
    muls = op_events(events, "multiply")
    (minus,) = op_events(events, "subtract")
    assert len(muls) == 2
    assert all(mul[5][0] != sub[6] for mul in muls)
    # after the comprehension, x is the outer one again: its own edge, or none (never a wrong one)
    assert minus[5][0] == sub[6] or producer_of(events, minus[5][0]) is None
    assert minus[5][0] not in {mul[6] for mul in muls}


def test_stores_inside_a_comprehension_link_within_it():
    def run(rows):
        return [r[0] + r[1] for r in rows]

    result, events = same_output(run, [[1, 2], [1, 2]])
    assert result == [3, 3]
    subs = op_events(events, "subscript")
    adds = op_events(events, "add")
    assert len(subs) == 4 and len(adds) == 2
    assert [a[5] for a in adds] == [(subs[0][6], subs[1][6]), (subs[2][6], subs[3][6])]


def test_a_walrus_inside_a_comprehension_links_both_uses():
    def run(rows):
        return [(y := r[0]) + y for r in rows], y

    result, events = same_output(run, [[1], [1]])
    assert result == ([2, 2], 1)
    subs = op_events(events, "subscript")
    adds = op_events(events, "add")
    assert [add[5][0] for add in adds] == [sub[6] for sub in subs]
    # 3.12+: y is a plain local of run; 3.10/3.11: a cell of the comprehension's own
    # code, read back as a closure variable (no edge, never a wrong one)
    for add, sub in zip(adds, subs):
        assert add[5][1] == sub[6] or producer_of(events, add[5][1]) is None


def test_a_generator_keeps_its_shadow_across_yields():
    @bundle(granularity="op")
    def pairs(a):
        for i in range(len(a)):
            x = a[i]
            yield x
            y = x + 1
            yield y

    buffers.drain()
    result = list(pairs([5, 5]))
    events = provenance.Resolver().convert(buffers.drain())
    assert result == [5, 6, 5, 6]
    subs = op_events(events, "subscript")
    adds = op_events(events, "add")
    assert [add[5][0] for add in adds] == [sub[6] for sub in subs]


# --- del, exceptions -------------------------------------------------------------------


def test_after_del_and_a_new_literal_the_old_edge_is_gone():
    def run(a):
        x = a[0]
        del x
        x = 5               # the same object as a[0]
        return x + 1

    result, events = same_output(run, [5])
    assert result == 6
    (sub,) = op_events(events, "subscript")
    (add,) = op_events(events, "add")
    assert add[5][0] != sub[6] and producer_of(events, add[5][0]) is None


def test_after_del_and_a_new_op_the_new_edge_is_taken():
    def run(a):
        x = a[0]
        del x
        x = a[1]
        return x + 1

    _, events = same_output(run, [5, 5])
    first, second = op_events(events, "subscript")
    (add,) = op_events(events, "add")
    assert add[5][0] == second[6]


def test_an_op_that_raises_leaves_the_local_and_its_edge_as_they_were():
    def run(a):
        x = a[0]
        try:
            x = a[10]       # raises: neither the hook nor the store runs
        except IndexError:
            pass
        return x + 1

    result, events = same_output(run, [2])
    assert result == 3
    (sub,) = op_events(events, "subscript")
    (add,) = op_events(events, "add")
    assert add[5][0] == sub[6]


# --- f-strings, attributes, long strings -----------------------------------------------


def test_an_fstring_stored_into_a_local_links_its_later_use():
    def run(c):
        g = f"{c}"
        return g + "!"

    result, events = same_output(run, 7)
    assert result == "7!"
    (fmt,) = op_events(events, "format")
    (add,) = op_events(events, "add")
    assert add[5][0] == fmt[6]


class Box:
    def __init__(self, v):
        self.v = v


def test_an_attribute_load_stored_into_a_local_links_its_later_use():
    def run(box):
        v = box.v
        return v * 2

    result, events = same_output(run, Box(3))
    assert result == 6
    (attr,) = op_events(events, ".v")
    (mul,) = op_events(events, "multiply")
    assert mul[5][0] == attr[6]


def test_a_long_string_stored_from_an_op_is_recorded_clipped_and_still_linked():
    def run(t):
        s = f"{t}"          # a long string: the hook keeps a clipped copy, not s
        return s[0] + s[-1]

    text = "ab" * 500
    result, events = same_output(run, text)
    assert result == "ab"
    (fmt,) = op_events(events, "format")
    subs = op_events(events, "subscript")
    assert len(subs) == 2 and all(sub[5][0] == fmt[6] for sub in subs)


# --- calls ---------------------------------------------------------------------------


def double(v):
    return v * 2


def test_a_called_global_is_no_input_and_its_argument_is():
    def run(a):
        y = double(a[0])        # 3.10: no hook for the load of `double` itself
        return double(double)(3) if False else y + double(y)

    result, events = same_output(run, [2])
    assert result == 12
    (sub,) = op_events(events, "subscript")
    first, second = op_events(events, "call")
    assert first[5] == (sub[6],)          # the argument, not the callable
    assert second[5] == (first[6],)
    (add,) = op_events(events, "add")
    assert add[5] == (first[6], second[6])


def test_a_global_passed_as_an_argument_is_still_an_input():
    def run():
        return list(map(double, [1]))

    result, events = same_output(run)
    assert result == [2]
    map_call = op_events(events, "call")[0]
    assert len(map_call[5]) == 2  # the function object and the list


def test_keyword_and_star_calls_link_their_results():
    def run(a):
        x = a[0]
        y = sorted(a, key=abs, reverse=False)
        z = max(*a)
        return x + y[0] + z

    result, events = same_output(run, [3, -4])
    assert result == 3 + 3 + 3
    sub_x, sub_y0 = op_events(events, "subscript")
    sorted_call, max_call = op_events(events, "call")
    first, second = op_events(events, "add")
    assert sub_y0[5][0] == sorted_call[6]
    assert first[5] == (sub_x[6], sub_y0[6])
    assert second[5] == (first[6], max_call[6])


@bundle(granularity="op")
def five(_):
    return 5


def give_five():
    return 5


def test_a_marked_return_consumed_elsewhere_is_not_taken_for_a_later_calls_result():
    def run():
        values = list(map(five, [0]))   # five's return is used inside list(), not by a call here
        y = give_five()                 # an unmarked call returning the very same object
        return y + 1, values

    result, events = same_output(run)
    assert result == (6, [5])
    (five_call,) = call_events(events, "five")
    give = [e for e in op_events(events, "call")][-1]
    (add,) = op_events(events, "add")
    assert add[5][0] == give[6]
    assert add[5][0] != ret_node(events, five_call[1])


def test_a_marked_callee_gets_the_callers_nodes_and_its_return_links_back():
    def run(a):
        x = a[0]
        y = five(x)
        return y + 1

    result, events = same_output(run, [7])
    assert result == 6
    (sub,) = op_events(events, "subscript")
    (five_call,) = call_events(events, "five")
    assert input_nodes(five_call) == [sub[6]]
    (add,) = op_events(events, "add")
    assert add[5][0] == ret_node(events, five_call[1])


# --- the hooks never run the program's code ------------------------------------------


class Loud(type):
    """A metaclass whose __hash__ / __eq__ say when they are called."""
    calls: list = []

    def __hash__(cls):
        Loud.calls.append("hash")
        return id(cls)

    def __eq__(cls, other):
        Loud.calls.append("eq")
        return cls is other


class Thing(metaclass=Loud):
    def __init__(self, n):
        self.n = n

    def __add__(self, other):
        return Thing(self.n + other.n)


def test_the_hooks_never_hash_or_compare_the_type_of_a_value():
    def run(a):
        x = a[0]
        y = x + a[1]
        z = y.n
        w = -z
        s = f"{w}"
        t = Thing(len(s))
        return t.n, y.n

    _, traced = op_mode(run)
    Loud.calls.clear()
    buffers.drain()
    assert traced([Thing(1), Thing(2)]) == (2, 3)
    assert Loud.calls == []
    buffers.drain()
