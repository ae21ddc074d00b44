"""tracer.param in a chained assignment: every target is a place of the one parameter.

    FIRST = SECOND = tracer.param("text")     # one parameter, named after FIRST

Only the targets of that statement: a copy the program takes later under
another name (`before = FIRST`) is its own and a set never changes it.
"""
from __future__ import annotations

import sys

import pytest

from tracer.params import registry



def test_every_global_of_a_chain_is_a_place_of_one_parameter_named_after_the_first(load):
    mod = load("""
        from tracer import param
        FIRST = SECOND = THIRD = param("shared text")
    """)
    record = registry.get(f"{mod.__name__}.FIRST")
    assert registry.get(f"{mod.__name__}.SECOND") is None
    assert all(registry.by_global[(mod.__name__, name)] is record for name in ("FIRST", "SECOND", "THIRD"))
    record.set("new text")
    assert (mod.FIRST, mod.SECOND, mod.THIRD) == ("new text", "new text", "new text")


def test_a_copy_taken_after_the_chain_is_left_alone(load):
    mod = load("""
        from tracer import param
        FIRST = SECOND = param("chain start")
        before = FIRST
    """)
    registry.get(f"{mod.__name__}.FIRST").set("chain patched")
    assert (mod.FIRST, mod.SECOND, mod.before) == ("chain patched", "chain patched", "chain start")


def test_a_chain_of_instance_attributes_is_set_on_every_instance(load):
    mod = load("""
        from tracer import param
        class Pair:
            def __init__(self):
                self.left = self.right = param("left and right")
        one, two = Pair(), Pair()
    """)
    registry.get("Pair.left").set("both sides")
    assert [(p.left, p.right) for p in (mod.one, mod.two)] == [("both sides", "both sides")] * 2
    assert (mod.Pair().left, mod.Pair().right) == ("both sides", "both sides")


def test_a_chain_of_class_attributes_in_a_class_body(load):
    mod = load("""
        from tracer import param
        class Settings:
            short = brief = param("few words")
    """)
    registry.get("Settings.short").set("fewer words")
    assert (mod.Settings.short, mod.Settings.brief) == ("fewer words", "fewer words")


def test_a_chain_mixing_a_global_and_an_attribute(load):
    mod = load("""
        from tracer import param
        class Config:
            pass
        config = Config()
        DEFAULT = config.greeting = param("hi all")
    """)
    registry.get(f"{mod.__name__}.DEFAULT").set("hello all")
    assert (mod.DEFAULT, mod.config.greeting) == ("hello all", "hello all")


def test_a_target_that_is_no_plain_place_ends_the_chain_but_keeps_the_places_before_it(load):
    mod = load("""
        from tracer import param
        slots = [None]
        KEPT = slots[0] = LATER = param("kept text")
    """)
    registry.get(f"{mod.__name__}.KEPT").set("changed text")
    # the subscript target is not followed; the scan stops there
    assert (mod.KEPT, mod.slots[0], mod.LATER) == ("changed text", "kept text", "kept text")


def test_a_chain_of_two_locals_is_one_parameter_named_after_the_first(load):
    # 3.13 stores both locals with one instruction (STORE_FAST_STORE_FAST)
    mod = load("""
        from tracer import param
        def pick_chained():
            first = second = param("local pair")
            return first, second
    """)
    assert mod.pick_chained() == ("local pair", "local pair")
    record = registry.get("pick_chained.first")
    assert record.kind == "value" and registry.get("pick_chained.second") is None
    record.set("other pair")
    assert mod.pick_chained() == ("other pair", "other pair")


def test_a_chain_repeated_on_every_call_keeps_one_parameter(load):
    mod = load("""
        from tracer import param
        def reset():
            global CURRENT, PREVIOUS
            CURRENT = PREVIOUS = param("reset text")
    """)
    mod.reset()
    record = registry.get(f"{mod.__name__}.CURRENT")
    record.set("patched reset")
    mod.reset()
    assert (mod.CURRENT, mod.PREVIOUS) == ("patched reset", "patched reset")
    assert len(record.locations) == 2
