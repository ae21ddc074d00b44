"""Provenance is exact: an edge means the value really flowed (docs/internals.md §3).

Shared objects (small ints, interned strings, None, True, empty tuples) are
the hard case: CPython hands out the same object for an equal literal, so
identity alone cannot tell a traced result from a literal. Both directions
are tested in both granularities.
"""
from __future__ import annotations

import gc
import sys
import weakref

import pytest

from tracer import buffers, params, provenance
from tracer.marking import bundle

@pytest.fixture(autouse=True)
def no_swallowed_hook_errors():
    """Hooks never raise into the program; they count what they swallow. It must stay 0."""
    from tracer import hooks as _hooks
    before = _hooks.errors()
    yield
    assert _hooks.errors() == before, "a hook swallowed an internal error"



def trace(fn, *args, resolver=None):
    """Run fn, return (result, wire events) from a fresh (or the given) resolver."""
    buffers.drain()
    result = fn(*args)
    recs = buffers.drain()
    resolver = resolver or provenance.Resolver()
    return result, resolver.convert(recs)


def call_events(events, qualname_suffix):
    from tracer import marking
    return [e for e in events if e[0] == "call" and marking.registry[e[2]].qualname.endswith(qualname_suffix)]


def ret_node(events, op):
    return next(e[2] for e in events if e[0] == "ret" and e[1] == op)


def input_nodes(call_event):
    return [node for _, node in call_event[4]]


def producer_of(events, node):
    """op that returned `node` (call mode) or op event that output it (op mode), else None."""
    for e in events:
        if e[0] == "ret" and e[2] == node:
            return ("ret", e[1])
        if e[0] == "op" and e[6] == node:
            return ("op", e[1])
    return None


# --- call mode -----------------------------------------------------------------


@bundle()
def make_list(n):
    return list(range(n))


@bundle()
def total(values):
    return sum(values)


@bundle()
def identity(x):
    return x


def test_call_mode_result_passed_to_another_marked_call_is_linked_to_its_producer():
    def run():
        values = make_list(3)
        return total(values)

    _, events = trace(run)
    (make,) = call_events(events, "make_list")
    (tot,) = call_events(events, "total")
    assert input_nodes(tot) == [ret_node(events, make[1])]


def test_call_mode_equal_but_distinct_object_is_not_linked():
    def run():
        make_list(3)
        return total([0, 1, 2])

    _, events = trace(run)
    (make,) = call_events(events, "make_list")
    (tot,) = call_events(events, "total")
    assert input_nodes(tot) != [ret_node(events, make[1])]
    assert producer_of(events, input_nodes(tot)[0]) is None


SHARED = [5, 0, -5, 256, True, False, None, "ok", "a", "", (), b""]


@pytest.mark.parametrize("value", SHARED, ids=repr)
def test_call_mode_equal_literal_of_a_shared_object_never_links_to_a_traced_result(value):
    @bundle()
    def produce():
        return value

    def run():
        produced = produce()
        assert produced is value  # CPython shares it: identity cannot tell them apart
        return identity(value)   # the literal, not the traced result

    _, events = trace(run)
    (prod,) = call_events(events, "produce")
    (ident,) = call_events(events, "identity")
    assert input_nodes(ident) != [ret_node(events, prod[1])]
    assert producer_of(events, input_nodes(ident)[0]) is None


@pytest.mark.parametrize("value", SHARED, ids=repr)
def test_call_mode_feedback_on_a_shared_traced_result_finds_that_result(value):
    @bundle()
    def produce():
        return value

    resolver = provenance.Resolver()
    _, events = trace(produce, resolver=resolver)
    (prod,) = call_events(events, "produce")
    assert resolver.node_for_value(value) == ret_node(events, prod[1])


def test_call_mode_constant_returned_by_a_function_is_not_linked_to_an_equal_literal():
    @bundle()
    def greeting():
        return "Hello, world! (a constant)"

    def run():
        g = greeting()
        literal = "Hello, world! (a constant)"
        assert g is literal  # the compiler merged the two constants into one object
        return identity(literal)

    _, events = trace(run)
    (ident,) = call_events(events, "identity")
    assert producer_of(events, input_nodes(ident)[0]) is None


def test_call_mode_object_with_two_producers_is_not_linked_to_either():
    def run():
        values = make_list(2)
        again = identity(values)  # a second call produces the same object
        return total(again)

    _, events = trace(run)
    (tot,) = call_events(events, "total")
    assert producer_of(events, input_nodes(tot)[0]) is None


def test_call_mode_released_episode_forgets_values_and_frees_them():
    resolver = provenance.Resolver()
    values, _ = trace(make_list, 4, resolver=resolver)
    assert resolver.node_for_value(values) is not None
    resolver.release()
    assert resolver.node_for_value(values) is None
    _, events = trace(total, values, resolver=resolver)
    (tot,) = call_events(events, "total")
    assert producer_of(events, input_nodes(tot)[0]) is None


def test_call_mode_release_lets_produced_objects_be_collected():
    class Payload:
        pass

    @bundle()
    def produce_payload():
        return Payload()

    resolver = provenance.Resolver()
    obj, _ = trace(produce_payload, resolver=resolver)
    alive = weakref.ref(obj)
    del obj
    gc.collect()
    assert alive() is not None  # kept for the episode: its id must stay unique
    resolver.release()
    gc.collect()
    assert alive() is None


GREETING = params.param("Hello there, friend!", name="test_provenance.greeting")
ALIAS = GREETING  # same object, different name: never a parameter read


@bundle()
def reads_greeting():
    return GREETING + "!"


@bundle()
def reads_alias():
    return ALIAS + "!"


def test_call_mode_reading_a_parameter_global_is_a_read_input_of_the_call():
    _, events = trace(reads_greeting)
    (call,) = call_events(events, "reads_greeting")
    reads = [e for e in events if e[0] == "read"]
    assert [(e[1], e[2]) for e in reads] == [(call[1], "test_provenance.greeting")]
    assert ("param", reads[0][3], "test_provenance.greeting") in events


def test_call_mode_same_object_under_another_name_is_not_a_parameter_read():
    _, events = trace(reads_alias)
    assert not [e for e in events if e[0] in ("read", "param")]


def test_call_mode_parameter_passed_on_links_to_the_parameter_node():
    @bundle()
    def passes_greeting():
        return identity(GREETING)

    _, events = trace(passes_greeting)
    (read,) = [e for e in events if e[0] == "read"]
    (ident,) = call_events(events, "identity")
    assert input_nodes(ident) == [read[3]]


WORD = params.param("Hello", name="test_provenance.word")  # identifier-like: CPython interns equal literals


def test_call_mode_parameter_passed_by_unmarked_code_is_the_parameters_node():
    # Unmarked code reads the parameter and passes it on: the marked call's
    # input is the parameter (tracer.param handed out an object of its own).
    _, events = trace(lambda: identity(WORD))
    (ident,) = call_events(events, "identity")
    assert ("param", input_nodes(ident)[0], "test_provenance.word") in events


def test_call_mode_equal_interned_literal_is_never_taken_for_the_parameter():
    _, events = trace(lambda: identity("Hello"))
    (ident,) = call_events(events, "identity")
    assert not [e for e in events if e[0] == "param"]
    assert producer_of(events, input_nodes(ident)[0]) is None


class Agent:
    style = params.param("formal and brief", name="test_provenance.Agent.style")

    @bundle()
    def describe(self):
        return "style: " + self.style

    @bundle(granularity="op")
    def describe_ops(self):
        return "style: " + self.style


@pytest.mark.parametrize("method", ["describe", "describe_ops"])
def test_reading_a_parameter_attribute_is_a_read_input_in_both_modes(method):
    _, events = trace(getattr(Agent(), method))
    (read,) = [e for e in events if e[0] == "read"]
    assert read[2] == "test_provenance.Agent.style"
    assert ("param", read[3], "test_provenance.Agent.style") in events


def test_op_mode_parameter_attribute_flows_into_the_op_that_uses_it():
    _, events = trace(Agent().describe_ops)
    (read,) = [e for e in events if e[0] == "read"]
    (add,) = op_events(events, "add")
    assert add[5][1] == read[3]


# --- op mode -------------------------------------------------------------------


def op_events(events, opname):
    return [e for e in events if e[0] == "op" and e[4] == opname]


@pytest.mark.parametrize("value", [4, True, None, "ok", ()], ids=repr)
def test_op_mode_shared_traced_result_flowing_on_gets_its_edge(value):
    @bundle(granularity="op")
    def produce():
        return value

    @bundle(granularity="op")
    def consume():
        got = produce()
        return got == value   # the compare's left input is produce()'s result

    result, events = trace(consume)
    assert result is True
    (prod,) = call_events(events, "produce")
    (cmp,) = op_events(events, "eq")
    assert cmp[5][0] == ret_node(events, prod[1])
    assert producer_of(events, cmp[5][1]) is None  # the literal on the right: no producer


@pytest.mark.parametrize("value", [4, True, None, "ok", ()], ids=repr)
def test_op_mode_equal_shared_literal_never_gets_the_traced_edge(value):
    @bundle(granularity="op")
    def produce():
        return value

    @bundle(granularity="op")
    def consume():
        produce()
        same = value
        return same == value

    _, events = trace(consume)
    (cmp,) = op_events(events, "eq")
    assert all(producer_of(events, node) is None for node in cmp[5])


def test_op_mode_small_ints_produced_by_ops_keep_separate_edges():
    @bundle(granularity="op")
    def arithmetic(a):
        b = a + 1        # 4
        c = a * 0
        d = c + 4        # also 4: the very same object as b
        return b - d

    result, events = trace(arithmetic, 3)
    assert result == 0
    first, second = op_events(events, "add")
    (sub,) = op_events(events, "subtract")
    assert sub[5] == (first[6], second[6])
    assert first[6] != second[6]


def test_op_mode_string_built_by_an_op_flows_to_the_next_op_not_to_an_equal_literal():
    @bundle(granularity="op")
    def strings():
        parts = ["o", "k"]
        made = "".join(parts)        # a traced call result equal to the literal "ok"
        lit = "ok"
        return made + "!", lit + "?"

    _, events = trace(strings)
    (join,) = op_events(events, "call")  # "".join(parts): inputs are the receiver and parts
    first, second = op_events(events, "add")
    assert first[5][0] == join[6]
    assert second[5][0] != join[6] and producer_of(events, second[5][0]) is None


def test_op_mode_local_variable_carries_provenance_across_statements():
    @bundle(granularity="op")
    def chain(x):
        y = x * 2
        z = y
        return z - 1

    _, events = trace(chain, 5)
    (mul,) = op_events(events, "multiply")
    (sub,) = op_events(events, "subtract")
    (call,) = call_events(events, "chain")
    assert mul[5][0] == input_nodes(call)[0]   # x: the call's argument node
    assert sub[5][0] == mul[6]


@pytest.mark.parametrize("c", [True, False])
def test_op_mode_value_from_a_branch_join_gets_no_invented_edge(c):
    @bundle(granularity="op")
    def pick(c, a, b):
        return (a if c else b) + 0

    _, events = trace(pick, c, 7, 7)  # a and b are the same object
    (add,) = op_events(events, "add")
    (call,) = call_events(events, "pick")
    c_node, a_node, b_node = input_nodes(call)
    # the branch not taken is never named; the taken one may be (3.12+ duplicates
    # the `+ 0` into both branches, so the rewriter knows it) or left untracked
    wrong = b_node if c else a_node
    assert add[5][0] != wrong and add[5][0] != c_node


def test_op_mode_argument_passed_to_a_marked_callee_is_the_callers_node():
    @bundle(granularity="op")
    def callee(v):
        return v

    @bundle(granularity="op")
    def caller(x):
        y = x + 1000
        return callee(y)

    _, events = trace(caller, 1)
    (add,) = op_events(events, "add")
    (c,) = call_events(events, "callee")
    assert input_nodes(c) == [add[6]]


def test_op_mode_in_place_string_building_keeps_each_step_linked():
    @bundle(granularity="op")
    def build(n):
        s = ""
        for i in range(n):
            s += "ab"
        return s

    result, events = trace(build, 3)
    assert result == "ababab"
    adds = op_events(events, "inplace_add")
    assert len(adds) == 3
    assert adds[1][5][0] == adds[0][6] and adds[2][5][0] == adds[1][6]


def test_op_mode_arguments_after_a_closure_captured_argument_keep_their_nodes():
    @bundle(granularity="op")
    def f(a, b, c):
        get_b = lambda: b  # b lives in a cell
        return c + 1, get_b()

    _, events = trace(f, 1000, 2000, 3000)
    (call,) = call_events(events, ".f")
    (add,) = op_events(events, "add")
    assert add[5][0] == input_nodes(call)[2]


def test_call_events_name_a_function_whose_definition_carries_its_source():
    # The flusher sends definitions for the function ids it finds in events.
    from tracer import marking

    _, events = trace(make_list, 2)
    (call,) = call_events(events, "make_list")
    definition = marking.function_def(call[2])
    assert definition.qualname == "make_list" and "return list(range(n))" in definition.source


def test_op_mode_sites_come_with_their_source_text():
    @bundle(granularity="op")
    def scaled(x):
        return x * 3 + 1

    from tracer import marking

    _, events = trace(scaled, 2)
    sites = {s.op: s for s in (marking.registry.site_def(e[3]) for e in events if e[0] == "op")}
    assert set(sites) >= {"multiply", "add"}
    assert sites["multiply"].line == scaled.__code__.co_firstlineno + 2
    if sys.version_info >= (3, 11):  # 3.10 has no column information
        assert sites["multiply"].text == "x * 3"
        assert sites["add"].text == "x * 3 + 1"


def test_events_of_a_call_from_an_earlier_episode_are_skipped_not_misattributed():
    @bundle()
    def steps():
        yield 1
        yield 2

    resolver = provenance.Resolver()
    g = steps()
    buffers.drain()
    next(g)
    resolver.convert(buffers.drain())
    resolver.release()           # a new episode starts while the generator is suspended
    next(g)
    events = resolver.convert(buffers.drain())
    assert not [e for e in events if e[0] == "ret"]
    assert resolver.skipped == 1


def test_an_exception_leaving_a_marked_call_is_that_calls_output_and_can_get_feedback():
    @bundle()
    def inner(x):
        raise ValueError(f"bad {x}")

    @bundle()
    def outer(x):
        return inner(x)

    def run():
        try:
            outer(1)
        except ValueError as e:
            return e

    resolver = provenance.Resolver()
    err, events = trace(run, resolver=resolver)
    (out_call,) = call_events(events, "outer")
    excs = [e for e in events if e[0] == "exc"]
    assert [e[2] for e in excs] == ["ValueError", "ValueError"]
    outer_node = ret_node(events, out_call[1])
    assert resolver.node_for_exception(err) == outer_node
    summary = next(e[2] for e in events if e[0] == "v" and e[1] == outer_node)
    assert "bad 1" in summary["r"]


def test_op_mode_feedback_on_a_long_returned_string_finds_the_call_that_returned_it():
    @bundle(granularity="op")
    def long_text(n):
        text = ""
        for i in range(n):
            text += "word "
        return text

    resolver = provenance.Resolver()
    text, events = trace(long_text, 200, resolver=resolver)
    assert len(text) == 1000
    (call,) = call_events(events, "long_text")
    assert resolver.node_for_value(text) == ret_node(events, call[1])


TEMPLATE = params.param("Answer {} briefly, please.", name="test_provenance.template")


def test_op_mode_method_call_on_a_parameter_takes_the_parameter_as_an_input():
    @bundle(granularity="op")
    def ask(question):
        return TEMPLATE.format(question)

    _, events = trace(ask, "why")
    (read,) = [e for e in events if e[0] == "read"]
    (call,) = call_events(events, ".ask")
    (fmt,) = op_events(events, "call")
    assert fmt[5] == (read[3], input_nodes(call)[0])  # the receiver, then the argument


# --- what the daemon receives ------------------------------------------------------


def test_converted_events_reach_the_daemon_as_the_arrays_of_the_wire_format():
    from protocol import messages as m
    from protocol.events import validate_event
    from protocol.framing import FrameDecoder, encode_message

    values, events = trace(make_list, 3)
    (batch,) = FrameDecoder().feed(encode_message(m.EventBatch(episode=1, events=events)))
    assert len(batch.events) == len(events)
    for sent, received in zip(events, batch.events):
        validate_event(received)
        assert received[0] == sent[0] and type(received) is list


VALUES = [0, 10**6, -(2**63), 2**64 - 1, 2**70, 2.5, float("nan"), float("inf"), True, None,
          "short", "é", "x" * 300, b"raw", [1, "a", None], (1, 2.5), [[1], {"k": 2}], {"a": [1, 2]},
          set(), [2**70], ["\ud800"]]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_is_sent_with_the_summary_summarize_gives(value):
    from protocol.values import summarize

    _, events = trace(identity, value)
    (call,) = call_events(events, "identity")
    (summary,) = [e[2] for e in events if e[0] == "v" and e[1] == input_nodes(call)[0]]
    expected = summarize(value)
    if value != value:  # nan: compare the rest
        assert summary["special"] == expected["special"] == "nan"
    else:
        assert summary == expected


def test_an_id_reused_after_the_episode_is_released_is_not_taken_for_the_old_object():
    class Payload:
        pass

    @bundle()
    def produce_payload():
        return Payload()

    resolver = provenance.Resolver()
    first, _ = trace(produce_payload, resolver=resolver)
    old_id = id(first)
    resolver.release()
    del first
    gc.collect()
    reused = [Payload() for _ in range(1000)]  # CPython hands the freed memory out again
    same_id = next((p for p in reused if id(p) == old_id), None)
    if same_id is None:
        pytest.skip("the allocator did not reuse the address this time")
    assert resolver.node_for_value(same_id) is None
    _, events = trace(total_of_payload, same_id, resolver=resolver)
    (call,) = call_events(events, "total_of_payload")
    assert producer_of(events, input_nodes(call)[0]) is None


@bundle()
def total_of_payload(payload):
    return 0


def test_a_container_changed_after_one_batch_is_summarised_as_it_is_in_the_next():
    resolver = provenance.Resolver()
    items = [1]
    trace(identity, items, resolver=resolver)
    items.append(2)
    _, events = trace(identity, items, resolver=resolver)
    (call,) = call_events(events, "identity")
    (summary,) = [e[2] for e in events if e[0] == "v" and e[1] == ret_node(events, call[1])]
    assert summary["len"] == 2 and [item["v"] for item in summary["items"]] == [1, 2]
