"""The rewriter observes loads of closure variables (LOAD_DEREF) without changing them.

Each load goes through `__@trace_read_cell` (call mode) or `__@trace_op_cell`
(op mode), keyed by (module, the reading function's qualname, variable):
the key `tracer.params.registry.by_closure` is indexed by. The hook passes
the loaded value through, so the function sees exactly what it saw before.
"""
from __future__ import annotations

import marshal

import pytest

from tracer import buffers, hooks
from tracer.marking import bundle

GRANULARITIES = ["call", "op"]


@pytest.fixture(autouse=True)
def no_swallowed_hook_errors():
    """Hooks never raise into the program; they count what they swallow. It must stay 0."""
    before = hooks.errors()
    yield
    assert hooks.errors() == before, "a hook swallowed an internal error"


def cell_keys(code):
    """The closure-variable keys a rewritten code object hands to its hooks."""
    return {c for c in code.co_consts if type(c) is tuple and len(c) == 3 and c[0] == __name__}


def make_counter(granularity):
    count = 0

    def bump():
        nonlocal count
        count += 1

    @bundle(granularity=granularity)
    def current():
        return count
    return bump, current


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_marked_closure_sees_every_later_change_of_its_variable(granularity):
    bump, current = make_counter(granularity)
    seen = []
    for _ in range(3):
        bump()
        seen.append(current())
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_loads_of_closure_variables_are_keyed_by_the_reading_functions_qualname(granularity):
    _, current = make_counter(granularity)
    hook = "__@trace_read_cell" if granularity == "call" else "__@trace_op_cell"
    assert hook in current.__code__.co_names
    assert cell_keys(current.__code__) == {(__name__, "make_counter.<locals>.current", "count")}


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_rewritten_closure_code_stays_marshallable(granularity):
    _, current = make_counter(granularity)
    assert marshal.loads(marshal.dumps(current.__code__)) == current.__code__


def make_unassigned(granularity):
    @bundle(granularity=granularity)
    def read_too_early():
        return later

    def plain_too_early():
        return later

    errors = []
    for func in (read_too_early, plain_too_early):
        try:
            func()
        except NameError as exc:
            errors.append(str(exc).replace(func.__name__, "FUNC"))
    later = "assigned"  # noqa: F841 - makes `later` a closure variable, unassigned above
    return errors, read_too_early


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_an_unassigned_closure_variable_raises_the_same_name_error(granularity):
    errors, read_too_early = make_unassigned(granularity)
    assert len(errors) == 2 and errors[0] == errors[1]
    assert read_too_early() == "assigned"


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_load_of_a_closure_variable_that_is_no_parameter_records_nothing(granularity):
    _, current = make_counter(granularity)
    buffers.drain()
    current()
    records = [r for _, chunk in buffers.drain() for r in chunk]
    assert not [r for r in records if r[0] in ("read", "readref")]


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_the_cell_a_nested_function_is_built_from_is_not_a_read(granularity):
    # LOAD_CLOSURE (3.13: LOAD_FAST of a cell) pushes the cell itself to build
    # the nested function: only LOAD_DEREF, which loads the value, is observed.
    @bundle(granularity=granularity)
    def builder():
        shared = "built"
        return lambda: shared

    assert cell_keys(builder.__code__) == set()
    assert builder()() == "built"
