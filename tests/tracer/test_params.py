"""tracer.param: where a parameter lives, what it is called, and setting it everywhere."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings
import weakref
from pathlib import Path

import pytest

from protocol import messages as m
from tracer import ids
from tracer.params import (
    ConfigParamError,
    ParamTypeError,
    param,
    register_config_param,
    registry,
    unshared_copy,
)

REPO = Path(__file__).resolve().parents[2]


def test_module_global_is_named_module_dot_name(load):
    mod = load("""
        import tracer
        PROMPT = tracer.param("Be terse.")
    """)
    record = registry.get(f"{mod.__name__}.PROMPT")
    assert record.kind == "global"
    assert record.get() == "Be terse."
    assert registry.by_global[(mod.__name__, "PROMPT")] is record


def test_global_of_a_script_run_as_main_is_named_after_the_script(tmp_path):
    script = tmp_path / "agent_app.py"
    script.write_text(textwrap.dedent("""
        import tracer
        from tracer.params import registry
        PROMPT = tracer.param("hello there")
        record = registry.get("agent_app.PROMPT")
        print(record.kind, registry.by_global[("__main__", "PROMPT")] is record)
        record.set("patched prompt")
        print(PROMPT)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["global True", "patched prompt"]


def test_class_attribute_is_named_class_dot_attr(load):
    mod = load("""
        from tracer import param
        class Agent:
            temperature = param(0.7)
    """)
    record = registry.get("Agent.temperature")
    assert record.kind == "class_attr"
    record.set(0.2)
    assert mod.Agent.temperature == 0.2


def test_instance_attribute_is_one_parameter_set_on_every_live_instance(load):
    mod = load("""
        from tracer import param
        class Writer:
            def __init__(self):
                self.style = param("formal tone")
    """)
    a, b = mod.Writer(), mod.Writer()
    record = registry.get("Writer.style")
    assert record.kind == "instance_attr"
    record.set("casual tone")
    assert (a.style, b.style) == ("casual tone", "casual tone")


def test_instances_created_after_a_set_get_the_new_value(load):
    mod = load("""
        from tracer import param
        class Reader:
            def __init__(self):
                self.mode = param("skim mode")
    """)
    mod.Reader()
    registry.get("Reader.mode").set("deep mode")
    assert mod.Reader().mode == "deep mode"


def test_an_attribute_the_program_reassigned_is_left_alone(load):
    mod = load("""
        from tracer import param
        class Greeter:
            def __init__(self):
                self.greeting = param("hello you")
    """)
    mine, theirs = mod.Greeter(), mod.Greeter()
    theirs.greeting = "set by the program"
    registry.get("Greeter.greeting").set("hi")
    assert (mine.greeting, theirs.greeting) == ("hi", "set by the program")


def test_instances_are_tracked_without_being_kept_alive(load):
    mod = load("""
        from tracer import param
        class Holder:
            def __init__(self):
                self.value = param("kept weakly")
    """)
    instance = mod.Holder()
    ref = weakref.ref(instance)
    del instance
    gc.collect()
    assert ref() is None
    registry.get("Holder.value").set("no instance to update")  # must not fail


def test_the_tracking_of_instances_shrinks_when_they_die(load):
    mod = load("""
        from tracer import param
        class Session:
            def __init__(self):
                self.token = param("session token")
    """)
    sessions = [mod.Session() for _ in range(1000)]
    record = registry.get("Session.token")
    assert len(record.instances) == 1000
    del sessions
    gc.collect()
    assert len(record.instances) == 0


def test_instances_without_weakref_support_are_patched_through_gc(load):
    mod = load("""
        from tracer import param
        class Slotted:
            __slots__ = ("label",)
            def __init__(self):
                self.label = param("slotted label")
    """)
    a, b = mod.Slotted(), mod.Slotted()
    registry.get("Slotted.label").set("new label")
    assert (a.label, b.label) == ("new label", "new label")


def test_mutable_values_are_copied_per_instance(load):
    mod = load("""
        from tracer import param
        class Shelf:
            def __init__(self):
                self.books = param(["a"])
    """)
    a, b = mod.Shelf(), mod.Shelf()
    registry.get("Shelf.books").set(["x", "y"])
    a.books.append("z")
    assert b.books == ["x", "y"]


def test_default_arguments_are_named_func_dot_arg(load):
    mod = load("""
        from tracer import param
        def ask(q, retries=param(2), *, tone=param("polite tone")):
            return q, retries, tone
    """)
    assert registry.get("ask.retries").kind == "default"
    registry.get("ask.retries").set(5)
    registry.get("ask.tone").set("blunt tone")
    assert mod.ask("q") == ("q", 5, "blunt tone")
    func_id = ids.function_id(mod.__name__, "ask")
    assert registry.by_default[(func_id, "retries")] is registry.get("ask.retries")


def test_default_of_a_method_and_of_a_nested_function(load):
    mod = load("""
        from tracer import param
        class Bot:
            def run(self, limit=param(10)):
                return limit
        def factory():
            def inner(scale=param(1.5)):
                return scale
            return inner
        made = factory()
    """)
    registry.get("Bot.run.limit").set(20)
    registry.get("factory.inner.scale").set(3.0)
    assert (mod.Bot().run(), mod.made()) == (20, 3.0)


def test_a_local_variable_returns_the_set_value_the_next_time_the_code_runs(load):
    mod = load("""
        from tracer import param
        def answer(q):
            template = param("Q: {}")
            return template.format(q)
    """)
    assert mod.answer("x") == "Q: x"
    record = registry.get("answer.template")
    assert record.kind == "value"
    record.set("Question: {}")
    assert mod.answer("x") == "Question: x"


def test_a_result_used_in_an_expression_is_not_taken_for_the_assigned_name(load):
    mod = load("""
        from tracer import param
        TOTAL = param(300) + 1
    """)
    assert registry.by_global.get((mod.__name__, "TOTAL")) is None
    assert mod.TOTAL == 301


def test_a_store_to_a_computed_object_is_not_guessed(load):
    mod = load("""
        from tracer import param
        class Box: pass
        holders = [Box()]
        holders[0].content = param("in a box")
    """)
    assert all(r.kind != "instance_attr" for r in registry.by_attr.get("content", []))
    assert mod.holders[0].content == "in a box"


@pytest.mark.parametrize("granularity", ["call", "op"])
def test_places_are_found_inside_marked_functions_whatever_the_granularity(load, granularity):
    mod = load(f"""
        import tracer
        class Planner_{granularity}:
            @tracer.bundle(granularity="{granularity}")
            def __init__(self):
                self.goal = tracer.param("plan the trip")
        @tracer.bundle(granularity="{granularity}")
        def plan_{granularity}(step):
            hint = tracer.param("think first")
            return hint + step
    """)
    planner = getattr(mod, f"Planner_{granularity}")()
    assert getattr(mod, f"plan_{granularity}")("!") == "think first!"
    assert registry.get(f"Planner_{granularity}.goal").kind == "instance_attr"
    assert registry.get(f"plan_{granularity}.hint").kind == "value"
    registry.get(f"Planner_{granularity}.goal").set("plan the budget")
    assert planner.goal == "plan the budget"


def test_a_value_inside_a_tuple_is_not_taken_for_the_assigned_name(load):
    mod = load("""
        from tracer import param
        PAIR = (param("left side"), "right")
    """)
    assert registry.by_global.get((mod.__name__, "PAIR")) is None
    assert mod.PAIR == ("left side", "right")


def test_strings_and_numbers_come_back_equal_but_unshared():
    for value in ("hello world", 10**20, 2.5, (1, 2), b"ab", frozenset({1})):
        copy = unshared_copy(value)
        assert copy == value and type(copy) is type(value)
        assert copy is not value


def test_values_cpython_always_shares_come_back_as_they_are():
    for value in (None, True, 7, "", "a", (), b"", b"x"):
        assert unshared_copy(value) is value


def test_param_of_an_interned_literal_does_not_return_the_code_constant(load):
    mod = load("""
        from tracer import param
        NAME = param("identifier_like")
        def constant():
            return "identifier_like"
    """)
    assert mod.NAME == mod.constant()
    assert mod.NAME is not mod.constant()


def test_explicit_name_wins_over_the_derived_one(load):
    mod = load("""
        from tracer import param
        SYSTEM = param("You help.", name="system_prompt", constraint="one sentence")
    """)
    record = registry.get("system_prompt")
    assert record.constraint == "one sentence"
    record.set("You assist.")
    assert mod.SYSTEM == "You assist."


def test_set_rejects_a_value_of_another_type_and_changes_nothing(load):
    mod = load("""
        from tracer import param
        COUNT = param(3)
    """)
    with pytest.raises(ParamTypeError, match=r"is a int; got str 'abc'"):
        registry.get(f"{mod.__name__}.COUNT").set("abc")
    assert mod.COUNT == 3


def test_set_converts_wire_types(load):
    mod = load("""
        from tracer import param
        PAIR = param((1, 2))
        RATE = param(0.5)
    """)
    registry.get(f"{mod.__name__}.PAIR").set([3, 4])
    registry.get(f"{mod.__name__}.RATE").set(1)
    assert (mod.PAIR, mod.RATE) == ((3, 4), 1.0)
    assert type(mod.RATE) is float


def test_set_also_updates_modules_that_imported_the_value(load):
    source = load("""
        from tracer import param
        GREETING = param("Good morning")
    """, stem="source")
    user = load(f"from {source.__name__} import GREETING\n", stem="user")
    registry.get(f"{source.__name__}.GREETING").set("Good evening")
    assert user.GREETING == "Good evening"


def test_set_leaves_the_programs_own_copies_under_other_names_alone(load):
    # `before = source.START` is a snapshot the program took on purpose: a
    # patch of the parameter must not change it (only `from source import
    # START` copies, which keep the name, follow the parameter).
    source = load("""
        from tracer import param
        START = param("starting text")
    """, stem="snapshot_source")
    user = load(f"import {source.__name__} as source\nbefore = source.START\n", stem="snapshot_user")
    registry.get(f"{source.__name__}.START").set("patched text")
    assert source.START == "patched text"
    assert user.before == "starting text"


def test_set_also_updates_the_other_names_of_a_chained_assignment(load):
    mod = load("""
        from tracer import param
        FIRST = SECOND = param("shared text")
    """)
    registry.get(f"{mod.__name__}.FIRST").set("new text")
    assert (mod.FIRST, mod.SECOND) == ("new text", "new text")


def test_generation_changes_when_a_parameter_is_set(load):
    mod = load("""
        from tracer import param
        LEVEL = param("low level")
    """)
    before = registry.generation
    registry.get(f"{mod.__name__}.LEVEL").set("high level")
    assert registry.generation > before


def test_definition_is_a_protocol_param_def(load):
    mod = load("""
        from tracer import param
        PROMPT = param("Say hi.", constraint="short")
    """)
    definition = registry.get(f"{mod.__name__}.PROMPT").definition()
    assert isinstance(definition, m.ParamDef)
    assert (definition.type, definition.value, definition.kind, definition.constraint) == ("str", "Say hi.", "global", "short")
    assert definition.where == f"global {mod.__name__}:PROMPT @ {mod.__file__}:3"


def test_config_params_declare_existing_globals_and_class_attributes(load):
    mod = load("""
        SYSTEM = "You are kind."
        class ConfigModel:
            temperature = 0.3
    """)
    glob = register_config_param(f"{mod.__name__}:SYSTEM")
    attr = register_config_param(f"{mod.__name__}:ConfigModel.temperature")
    assert (glob.kind, attr.kind) == ("global", "class_attr")
    glob.set("You are brief.")
    attr.set(0.9)
    assert (mod.SYSTEM, mod.ConfigModel.temperature) == ("You are brief.", 0.9)


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule_xyz:NAME", "module 'nosuchmodule_xyz' is not imported"),
    ("{mod}:MISSING", "has no global 'MISSING'"),
    ("{mod}:Nope.attr", "has no class 'Nope'"),
    ("{mod}:Model.nothing", "has no attribute 'nothing'"),
    ("no_colon", "must look like 'module:NAME'"),
])
def test_config_param_errors_say_what_is_missing(load, spec, message):
    mod = load("""
        class Model:
            temperature = 0.3
    """)
    with pytest.raises(ConfigParamError, match=message):
        register_config_param(spec.format(mod=mod.__name__))


def test_param_rejects_a_name_that_is_not_a_string():
    with pytest.raises(TypeError, match="name=...") :
        param(1, name=3)


def test_a_trainable_marked_function_is_a_source_parameter(load):
    mod = load("""
        import tracer
        @tracer.bundle(trainable=True)
        def summarise(text):
            return text[:10]
    """)
    record = registry.get(f"{mod.__name__}.summarise")
    assert record.kind == "source" and record.type == "code"
    assert "return text[:10]" in record.get()
    assert (record.signature, record.freevars) == ("(text)", [])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_holds_the_registry_lock_does_not_deadlock_the_child():
    from tracer import params

    held, release = threading.Event(), threading.Event()

    def holder():
        with params.registry.lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    held.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:
        os._exit(0 if params.registry.lock.acquire(timeout=2) else 3)
    release.set()
    thread.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
