"""validate_event: the daemon's ingest check of one trace event, naming tag and field."""
from __future__ import annotations

import pytest
from hypothesis import given, settings

from protocol import InvalidMessage, UnknownEvent, decode_body, encode_message, summarize, validate_event
from protocol import events as ev
from protocol import messages as m

from .strategies import events as valid_events

VALID = {
    "v": ["v", 1, summarize("abc")],
    "param": ["param", 1, "prompt"],
    "call": ["call", 10, 99, None, [["x", 1], [0, 2]], 140001, 123456789],
    "read": ["read", 10, "prompt", 1],
    "ret": ["ret", 10, 3, 123456999],
    "exc": ["exc", 10, "ValueError", "bad", "Traceback ...", 123457000],
    "op": ["op", 11, 10, 77, "BINARY_ADD", [1, 2], 4],
}


def test_every_documented_tag_has_a_layout_and_an_example():
    assert set(ev.LAYOUTS) == set(VALID) == {ev.VALUE, ev.PARAM, ev.CALL, ev.READ, ev.RETURN, ev.EXCEPTION, ev.OPERATION}


@pytest.mark.parametrize("tag", sorted(VALID))
def test_valid_events_pass_as_sent_and_as_received(tag):
    event = VALID[tag]
    validate_event(tuple(event))
    received = decode_body(encode_message(m.EventBatch(episode=1, events=[tuple(event)]))[4:]).events[0]
    validate_event(received)


@settings(max_examples=200, deadline=None)
@given(valid_events)
def test_generated_valid_events_pass(event):
    validate_event(event)


@pytest.mark.parametrize("event, message", [
    (["call", 10, 99, "top", [], 1, 2], r"^call.parent_op: expected int or None, got str$"),
    (["call", 10, 99, None, [["x"]], 1, 2], r"^call.args\[0\]: expected \[argname, node\]"),
    (["call", 10, 99, None, [["x", "n"]], 1, 2], r"^call.args\[0\]: expected \[argname, node\]"),
    (["ret", 10, 3.0, 1], r"^ret.node: expected int, got float$"),
    (["param", 1, 7], r"^param.name: expected str, got int$"),
    (["op", 11, 10, 77, "ADD", [1, "2"], 4], r"^op.inputs\[1\]: expected int, got str$"),
    (["exc", 10, "ValueError", None, "", 1], r"^exc.message: expected str, got None$"),
    (["v", 1, {"t": "int", "v": 3}], r"^v.summary.id: missing required key$"),
    (["v", 1, {"t": "list", "id": 1, "items": [{"t": "int", "id": 2, "v": [1]}]}], r"^v.summary.items\[0\].v: expected a scalar, got list$"),
    (["v", 1, {"t": "dict", "id": 1, "items": [[{"t": "int", "id": 2}]]}], r"^v.summary.items\[0\]: expected a \[key, value\] pair"),
    (["v", 1, "abc"], r"^v.summary: expected a summary map, got str$"),
])
def test_invalid_field_is_named_with_the_tag(event, message):
    with pytest.raises(InvalidMessage, match=message):
        validate_event(event)


def test_missing_trailing_field_is_named():
    with pytest.raises(InvalidMessage, match=r"^ret.t: missing \(a ret event has 4 items, this one has 3\)$"):
        validate_event(["ret", 10, 3])


def test_time_of_call_ret_and_exc_may_be_none_since_1_1():
    # the tracer takes no clock reading on the hot path
    validate_event(["call", 10, 99, None, [["x", 1]], 1, None])
    validate_event(["ret", 10, 3, None])
    validate_event(["exc", 10, "ValueError", "bad", "tb", None])
    with pytest.raises(InvalidMessage, match=r"^ret.t: expected int or None, got str$"):
        validate_event(["ret", 10, 3, "now"])


def test_extra_trailing_items_from_a_newer_minor_are_allowed():
    validate_event(["ret", 10, 3, 5, "added later"])


def test_unknown_tag_raises_unknown_event():
    with pytest.raises(UnknownEvent, match="unknown event tag 'span'"):
        validate_event(["span", 1])
    assert issubclass(UnknownEvent, InvalidMessage)


@pytest.mark.parametrize("event", [[], "ret", 5, None])
def test_non_array_or_empty_event_is_invalid(event):
    with pytest.raises(InvalidMessage, match="^event: expected a non-empty event array"):
        validate_event(event)


def test_tag_must_be_a_str():
    with pytest.raises(InvalidMessage, match=r"^event\[0\]: expected the event tag \(str\), got int$"):
        validate_event([1, 2])


def test_deeply_nested_summary_is_rejected_not_a_crash():
    summary: dict = {"t": "list", "id": 1, "items": []}
    for _ in range(200):
        summary = {"t": "list", "id": 1, "items": [summary]}
    with pytest.raises(InvalidMessage, match="nested deeper than"):
        validate_event(["v", 1, summary])
