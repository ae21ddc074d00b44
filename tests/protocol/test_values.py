"""Value summaries never run user code beyond one guarded repr, stay bounded, and always pack."""
from __future__ import annotations

import math
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import decode_body, encode_message, render, summarize, validate_summary
from protocol import messages as m
from protocol.values import MAX_ITEMS, MAX_NODES, MAX_TEXT


def over_the_wire(summary: dict) -> dict:
    batch = m.EventBatch(episode=1, events=[["v", 1, summary]])
    return decode_body(encode_message(batch)[4:]).events[0][2]


class Spy:
    """Records every dunder a summarizer could be tempted to call."""

    calls: list[str] = []

    def __repr__(self):
        Spy.calls.append("repr")
        return "Spy()"

    def __len__(self):
        Spy.calls.append("len")
        raise AssertionError("__len__ called")

    def __iter__(self):
        Spy.calls.append("iter")
        raise AssertionError("__iter__ called")

    def __eq__(self, other):
        Spy.calls.append("eq")
        raise AssertionError("__eq__ called")

    def __hash__(self):
        Spy.calls.append("hash")
        return object.__hash__(self)

    def __getattribute__(self, name):
        Spy.calls.append(f"getattr {name}")
        return object.__getattribute__(self, name)


@pytest.fixture
def spies():
    Spy.calls = []
    made = [Spy(), Spy()]
    return made


def test_builtin_containers_call_only_the_elements_repr(spies):
    holders = [list(spies), tuple(spies), {"a": spies[0], "b": spies[1]}]
    spy_set = set(spies)
    frozen = frozenset(spies)
    spy_keys = {spies[0]: 1}
    Spy.calls.clear()
    for holder in [*holders, spy_set, frozen, spy_keys]:
        summarize(holder)
    assert set(Spy.calls) == {"repr"}
    assert len(Spy.calls) == 3 * 2 + 2 + 2 + 1


def test_user_object_is_summarized_by_its_repr(spies):
    summary = summarize(spies[0])
    assert summary["t"].endswith("test_values.Spy")
    assert summary["r"] == "Spy()" and summary["trunc"] is False
    assert summary["id"] == id(spies[0])


class RecordingList(list):
    calls: list[str] = []

    def __iter__(self):
        RecordingList.calls.append("iter")
        raise AssertionError("__iter__ called")

    def __len__(self):
        RecordingList.calls.append("len")
        raise AssertionError("__len__ called")


def test_subclass_of_a_builtin_container_is_never_iterated():
    RecordingList.calls = []
    summary = summarize(RecordingList([1, 2]))
    assert RecordingList.calls == []
    assert summary["t"].endswith("RecordingList") and summary["r"] == "[1, 2]"


class RaisingRepr:
    def __repr__(self):
        raise ValueError("broken repr")


class NonStrRepr:
    def __repr__(self):
        return 42


class HugeRepr:
    def __repr__(self):
        return "x" * 1_000_000


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("no")


class ReprRaisingUnprintable:
    def __repr__(self):
        raise UnprintableError()


class ReprExits:
    def __repr__(self):
        raise SystemExit(3)


def test_repr_that_raises_is_reported():
    assert summarize(RaisingRepr())["r"] == "<repr failed: ValueError: broken repr>"


def test_repr_that_returns_a_non_str_is_reported():
    assert summarize(NonStrRepr())["r"].startswith("<repr failed: TypeError")


def test_repr_that_returns_a_huge_str_is_cut():
    summary = summarize(HugeRepr())
    assert summary["r"] == "x" * MAX_TEXT and summary["trunc"] is True
    assert render(summary) == "x" * MAX_TEXT + "..."


def test_repr_whose_exception_cannot_be_printed_is_reported_by_type():
    assert summarize(ReprRaisingUnprintable())["r"] == "<repr failed: UnprintableError>"


def test_repr_raising_system_exit_does_not_end_the_summarizer():
    assert summarize(ReprExits())["r"] == "<repr failed: SystemExit: 3>"


def test_shared_small_ints_none_and_true_summarize_as_themselves():
    summary = summarize([5, 5, None, True, None])
    assert [item["v"] for item in summary["items"]] == [5, 5, None, True, None]
    assert summary["items"][2]["id"] == id(None) == summary["items"][4]["id"]
    assert summary["items"][0]["id"] == summary["items"][1]["id"]
    assert render(summary) == "[5, 5, None, True, None]"


def test_int_beyond_64_bits_is_sent_as_digits():
    summary = summarize(-(2**100))
    assert summary == {"t": "int", "id": summary["id"], "big": str(-(2**100))}
    assert render(over_the_wire(summary)) == str(-(2**100))


def test_int_with_more_digits_than_python_will_print_shows_its_leading_hex_digits():
    huge = 10**20000 + 1
    summary = summarize(huge)
    assert summary["big"] == hex(huge)[: MAX_TEXT + 2] and summary["trunc"] is True
    assert summary["len"] == len(hex(huge)) - 2
    assert render(over_the_wire(summary)).endswith("...")


def test_enormous_int_is_summarized_in_linear_time():
    started = time.process_time()
    summary = summarize(-(3 << 20_000_000))
    assert time.process_time() - started < 1.0
    assert summary["big"].startswith("-0x3000")


def test_64_bit_ints_stay_verbatim():
    assert summarize(2**64 - 1)["v"] == 2**64 - 1
    assert summarize(-(2**63))["v"] == -(2**63)


@pytest.mark.parametrize("value, text", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
def test_non_finite_floats_survive_the_wire(value, text):
    summary = over_the_wire(summarize(value))
    assert summary["special"] == text and render(summary) == text


def test_short_bytes_are_verbatim():
    assert summarize(b"\x00ab")["v"] == b"\x00ab"
    assert render(summarize(bytearray(b"ab"))) == "bytearray(b'ab')"


def test_long_bytes_are_cut_with_their_length():
    summary = summarize(b"z" * 10_000)
    assert summary["v"] == b"z" * MAX_TEXT and summary["len"] == 10_000 and summary["trunc"] is True
    assert render(summary) == repr(b"z" * MAX_TEXT)[:-1] + "...'"


def test_long_str_is_cut_with_its_length():
    summary = summarize("a" * 10_000)
    assert (summary["v"], summary["len"], summary["trunc"]) == ("a" * MAX_TEXT, 10_000, True)
    assert render(summary) == "'" + "a" * MAX_TEXT + "...'"


def test_str_with_lone_surrogates_is_escaped_and_packs():
    summary = over_the_wire(summarize("bad \udcff here"))
    assert summary["v"] == "bad \\udcff here" and summary["esc"] is True


def test_str_with_lone_surrogates_renders_like_its_repr():
    text = "bad \udcff here \ud800"
    assert render(over_the_wire(summarize(text))) == repr(text)


def test_nesting_beyond_the_depth_bound_is_cut():
    summary = summarize([[[[[1]]]]], max_depth=2)
    inner = summary["items"][0]["items"][0]
    assert inner["items"] == [] and inner["len"] == 1 and inner["trunc"] is True
    assert render(summary) == "[[[...]]]"


def test_long_containers_show_the_first_items_and_their_length():
    summary = summarize(list(range(1000)))
    assert len(summary["items"]) == MAX_ITEMS and summary["len"] == 1000 and summary["trunc"] is True
    assert render(summary) == "[" + ", ".join(map(str, range(MAX_ITEMS))) + ", ...]"


def test_total_size_is_bounded_across_containers():
    summary = summarize([[i] * 50 for i in range(50)], max_items=50)

    def count(s):
        return 1 + sum(count(x) for x in s.get("items", []))

    assert count(summary) <= MAX_NODES + 1
    assert summary["trunc"] is True


def test_container_that_contains_itself_renders_like_python():
    loop: list = [1]
    loop.append(loop)
    assert render(summarize(loop)) == repr(loop) == "[1, [...]]"


@pytest.mark.parametrize("value", [
    (1,), (), set(), frozenset({1}), {"k": [1, 2.5]}, "it's", 2.5, None, b"", [1, 2],
])
def test_render_matches_repr_for_small_builtin_values(value):
    assert render(summarize(value)) == repr(value)


def test_render_of_garbage_does_not_raise():
    for garbage in [None, 1, "x", [], {"t": 1}, {"t": "list", "items": "x"}, {"t": "dict", "items": [[1]]},
                    {"items": [{"items": []}] * 3}, {"t": "x", "v": object()}]:
        assert isinstance(render(garbage), str)


def test_render_of_deeply_nested_garbage_does_not_overflow():
    summary: dict = {"t": "list", "id": 1, "items": []}
    for _ in range(sys.getrecursionlimit() * 2):
        summary = {"t": "list", "id": 1, "items": [summary]}
    assert render(summary).startswith("[[[")


class Thing:
    def __init__(self, a):
        self.a = a

    def __repr__(self):
        return f"Thing(a={self.a})"


def test_render_shows_user_objects_by_their_repr():
    assert render(summarize([Thing(1)])) == "[Thing(a=1)]"


def test_summaries_pass_their_own_validation():
    validate_summary(summarize({"a": [1, (2, b"x")], "b": Thing(2), "c": {1.5, None}, "d": 2**90}))


# --- properties ----------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=300)  # includes lone surrogates
python_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text | st.binary(max_size=300)
    | st.builds(bytearray, st.binary(max_size=10)) | st.builds(Thing, st.integers())
    | st.sampled_from([RaisingRepr, NonStrRepr, HugeRepr, ReprRaisingUnprintable]).map(lambda cls: cls()),
    lambda children: (st.lists(children, max_size=30) | st.tuples(children, children)
                      | st.frozensets(st.integers() | any_text, max_size=5)
                      | st.dictionaries(st.integers() | any_text, children, max_size=25)),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(python_values)
def test_any_summary_survives_the_wire_unchanged(value):
    summary = summarize(value)
    assert over_the_wire(summary) == summary
    validate_summary(summary)


@settings(max_examples=300, deadline=None)
@given(python_values)
def test_render_of_any_summary_returns_text(value):
    assert isinstance(render(summarize(value)), str)


summary_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["t", "id", "v", "len", "trunc", "esc", "big", "special", "items", "cycle", "r"]) | st.text(max_size=3),
        children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(summary_like)
def test_render_never_raises_on_arbitrary_data(data):
    assert isinstance(render(data), str)
