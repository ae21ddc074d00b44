"""tracer.param stored in a variable that nested functions read (a closure variable).

    def make_agent():
        prompt = tracer.param("Be brief.")     # a cell of make_agent's frame
        def answer(q): return f"{prompt} {q}"  # reads it as a free variable
        return answer

A set reaches the cell of every live function made from the nested `def`,
by every run of the enclosing function; the reads are in test_provenance.
"""
from __future__ import annotations

import itertools
import sys

import pytest

from tracer.params import ParamTypeError, registry

_counter = itertools.count()


def test_a_closure_variable_is_named_like_a_local_of_its_function(load):
    mod = load("""
        import tracer
        def make_greeter():
            greeting = tracer.param("Hello there")
            def greet(who):
                return f"{greeting}, {who}"
            return greet
        greet = make_greeter()
    """)
    record = registry.get("make_greeter.greeting")
    assert (record.kind, record.get()) == ("value", "Hello there")
    assert record.where.startswith(f"value {mod.__name__}:make_greeter.greeting @ ")
    key = (mod.__name__, "make_greeter.<locals>.greet", "greeting")
    assert registry.by_closure[key] == [record]


def test_set_changes_what_every_live_closure_returns(load):
    mod = load("""
        import tracer
        def make_agent(tag):
            prompt = tracer.param("Be brief.", name="closure_agent_prompt")
            def answer(q):
                return f"{prompt} {q} ({tag})"
            return answer
        first, second = make_agent(1), make_agent(2)
    """)
    registry.get("closure_agent_prompt").set("Be thorough.")
    assert (mod.first("hi"), mod.second("hi")) == ("Be thorough. hi (1)", "Be thorough. hi (2)")


def test_closures_made_after_a_set_get_the_new_value(load):
    mod = load("""
        import tracer
        def make_scorer():
            threshold = tracer.param(0.25, name="closure_threshold")
            return lambda x: x > threshold
    """)
    mod.make_scorer()
    registry.get("closure_threshold").set(0.75)
    assert mod.make_scorer()(0.5) is False


def test_a_set_reaches_functions_nested_at_any_depth_and_methods_of_local_classes(load):
    mod = load("""
        import tracer
        def build():
            style = tracer.param("formal style", name="closure_deep_style")
            def middle():
                def inner():
                    return style
                return inner
            class Writer:
                def write(self):
                    return style
            return middle(), Writer
        inner, Writer = build()
    """)
    registry.get("closure_deep_style").set("casual style")
    assert (mod.inner(), mod.Writer().write()) == ("casual style", "casual style")


def test_an_inner_variable_of_the_same_name_is_not_the_parameter(load):
    mod = load("""
        import tracer
        def outer():
            tone = tracer.param("warm tone", name="closure_shadowed_tone")
            def own_tone():
                tone = "cold" + " tone"
                def read():
                    return tone
                return read
            def outer_tone():
                return tone
            return own_tone(), outer_tone
        own, theirs = outer()
    """)
    registry.get("closure_shadowed_tone").set("hot tone")
    assert (mod.own(), mod.theirs()) == ("cold tone", "hot tone")
    assert (mod.__name__, "outer.<locals>.own_tone.<locals>.read", "tone") not in registry.by_closure


def test_a_closure_variable_the_program_reassigned_is_left_alone(load):
    mod = load("""
        import tracer
        def make_counter():
            label = tracer.param("count label", name="closure_reassigned_label")
            def rename(new):
                nonlocal label
                label = new
            def show():
                return label
            return rename, show
        rename, renamed = make_counter()
        _, untouched = make_counter()
        rename("my own " + "label")
    """)
    registry.get("closure_reassigned_label").set("patched label")
    assert (mod.renamed(), mod.untouched()) == ("my own label", "patched label")


def test_a_set_of_the_wrong_type_changes_no_closure(load):
    mod = load("""
        import tracer
        def make_limit():
            limit = tracer.param(3, name="closure_typed_limit")
            return lambda: limit
        get_limit = make_limit()
    """)
    with pytest.raises(ParamTypeError, match="closure_typed_limit"):
        registry.get("closure_typed_limit").set("three")
    assert mod.get_limit() == 3


def test_a_failed_set_puts_the_old_value_back_into_every_closure(load):
    # `shared = box.text = param(...)`: the closure variable is written first,
    # then the program's own property setter refuses the value.
    mod = load("""
        import tracer
        class Box:
            @property
            def text(self):
                return self._text
            @text.setter
            def text(self, value):
                if "forbidden" in value:
                    raise ValueError("Box refuses forbidden text")
                self._text = value
        def make_pair():
            box = Box()
            shared = box.text = tracer.param("old text", name="closure_rollback_text")
            return (lambda: shared), box
        get_text, box = make_pair()
    """)
    record = registry.get("closure_rollback_text")
    with pytest.raises(ValueError, match="Box refuses forbidden text"):
        record.set("forbidden text")
    assert (mod.get_text(), mod.box.text, record.get()) == ("old text", "old text", "old text")
    record.set("new text")
    assert (mod.get_text(), mod.box.text) == ("new text", "new text")


def test_a_nonlocal_store_stays_a_plain_value_of_the_function_that_runs_it(load):
    # The cell belongs to an enclosing function the storing code cannot name:
    # the parameter lives at the call site (its next declaration returns a set value).
    mod = load("""
        import tracer
        def outer():
            note = None
            def assign():
                nonlocal note
                note = tracer.param("first note", name="closure_nonlocal_note")
            assign()
            return note, assign
    """)
    assert mod.outer()[0] == "first note"
    record = registry.get("closure_nonlocal_note")
    assert record.kind == "value" and not record.locations
    record.set("second note")
    assert mod.outer()[0] == "second note"


def test_the_enclosing_function_reading_its_own_variable_is_a_reader(load):
    mod = load("""
        import tracer
        def owner():
            rule = tracer.param("be kind", name="closure_owner_rule")
            return (lambda: rule), rule
    """)
    mod.owner()
    record = registry.get("closure_owner_rule")
    assert registry.by_closure[(mod.__name__, "owner", "rule")] == [record]
    assert registry.by_closure[(mod.__name__, "owner.<locals>.<lambda>", "rule")] == [record]


def test_runs_that_declare_different_parameters_in_one_variable_are_set_apart(load):
    mod = load("""
        import tracer
        def make_agent(role):
            prompt = tracer.param(f"You are a {role}.", name=f"closure_{role}.prompt")
            return lambda: prompt
        writer, critic = make_agent("writer"), make_agent("critic")
    """)
    registry.get("closure_writer.prompt").set("You write.")
    assert (mod.writer(), mod.critic()) == ("You write.", "You are a critic.")


def test_a_shared_value_of_two_parameters_in_one_variable_is_left_alone(load):
    # Both cells hold the same small int: which parameter each belongs to is unknowable.
    mod = load("""
        import tracer
        def make_retry(kind):
            retries = tracer.param(3, name=f"closure_{kind}.retries")
            return lambda: retries
        fast, slow = make_retry("fast"), make_retry("slow")
    """)
    registry.get("closure_fast.retries").set(5)
    assert (mod.fast(), mod.slow()) == (3, 3)
    assert mod.make_retry("fast")() == 5  # the next run declares the set value


def test_a_patch_and_a_rollback_reach_the_running_closures(load):
    from protocol import messages as m
    from tracer import patcher

    mod = load("""
        import tracer
        def make_guide():
            hint = tracer.param("think step by step", name="closure_patched_hint")
            return lambda: hint
        guide = make_guide()
    """)
    first, second = 7_000_001, 7_000_002

    def patch(version, value):
        item = m.PatchItem(name="closure_patched_hint", kind="value", value=value)
        return patcher.apply_patch(m.Patch(version=version, items=[item]))

    assert [r.ok for r in patch(first, "answer directly")] == [True]
    assert [r.ok for r in patch(second, "ask a question first")] == [True]
    assert mod.guide() == "ask a question first"
    assert all(r.ok for r in patcher.rollback_to(first))
    assert mod.guide() == "answer directly"
