"""A parameter read as a closure variable is a read input of the marked call that reads it.

    def make_agent():
        prompt = tracer.param("Be brief.")     # a variable of make_agent
        @tracer.bundle()
        def answer(q): return f"{prompt} {q}"  # reads it: a read of "make_agent.prompt"
        return answer

As for globals and attributes, the read is recorded by name first (this
very variable of this very enclosing function), then by identity with the
parameter's current value: an equal value anywhere else is never linked.
"""
from __future__ import annotations

import pytest

from tracer import buffers, hooks, params, provenance
from tracer.marking import bundle

GRANULARITIES = ["call", "op"]


@pytest.fixture(autouse=True)
def no_swallowed_hook_errors():
    """Hooks never raise into the program; they count what they swallow. It must stay 0."""
    before = hooks.errors()
    yield
    assert hooks.errors() == before, "a hook swallowed an internal error"


def trace(fn, *args):
    """Run fn, return (result, wire events)."""
    buffers.drain()
    result = fn(*args)
    return result, provenance.Resolver().convert(buffers.drain())


def reads(events):
    return [e for e in events if e[0] == "read"]


def calls_of(events, name):
    from tracer import marking
    return [e for e in events if e[0] == "call" and marking.registry[e[2]].qualname.endswith(name)]


def make_agent(granularity):
    prompt = params.param("Be brief.", name=f"closure_prompt_{granularity}")

    @bundle(granularity=granularity)
    def answer(question):
        return f"{prompt} {question}"
    return answer


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_reading_a_closure_variable_parameter_is_a_read_input_of_the_call(granularity):
    result, events = trace(make_agent(granularity), "why?")
    assert result == "Be brief. why?"
    (call,) = calls_of(events, "answer")
    (read,) = reads(events)
    assert (read[1], read[2]) == (call[1], f"closure_prompt_{granularity}")
    assert ("param", read[3], f"closure_prompt_{granularity}") in events


def test_op_mode_closure_parameter_flows_into_the_operation_that_uses_it():
    _, events = trace(make_agent("op"), "why?")
    (read,) = reads(events)
    formats = [e for e in events if e[0] == "op" and e[4] == "format"]
    assert [read[3]] in [list(e[5]) for e in formats]


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_set_changes_what_the_running_closure_returns_and_reads(granularity):
    answer = make_agent(granularity)
    record = params.registry.get(f"closure_prompt_{granularity}")
    record.set(f"Be thorough ({granularity}).")
    try:
        result, events = trace(answer, "why?")
        assert result == f"Be thorough ({granularity}). why?"
        (read,) = reads(events)
        assert read[2] == record.name
    finally:
        record.set("Be brief.")


def make_lookalike(granularity):
    # The same variable name and an equal value, built at run time: a different object.
    prompt = "".join(["Be ", "brief."])

    @bundle(granularity=granularity)
    def answer(question):
        return f"{prompt} {question}"
    return answer


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_an_unrelated_closure_variable_with_an_equal_value_is_never_linked(granularity):
    make_agent(granularity)  # the parameter exists, with an equal value
    result, events = trace(make_lookalike(granularity), "why?")
    assert result == "Be brief. why?"
    assert not [e for e in events if e[0] in ("read", "param")]


def make_counter_pair(granularity):
    limit = params.param(3, name="closure_limit")  # a small int: CPython shares it

    @bundle(granularity=granularity)
    def read_limit():
        return limit

    def make_other():
        limit = 3  # the very same object, but another function's variable

        @bundle(granularity=granularity)
        def read_other():
            return limit
        return read_other
    return read_limit, make_other()


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_shared_value_is_a_read_only_of_the_parameters_own_variable(granularity):
    read_limit, read_other = make_counter_pair(granularity)
    _, events = trace(read_other)
    assert not reads(events)
    _, events = trace(read_limit)
    assert [e[2] for e in reads(events)] == ["closure_limit"]


def make_aliased(granularity):
    rule = params.param("Answer in French.", name=f"closure_rule_{granularity}")
    alias = rule  # the same object under another variable: not the parameter

    @bundle(granularity=granularity)
    def by_alias():
        return alias
    return by_alias


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_the_same_object_under_another_variable_is_not_a_read(granularity):
    _, events = trace(make_aliased(granularity))
    assert not reads(events)


def make_nested(granularity):
    tone = params.param("Stay calm.", name=f"closure_tone_{granularity}")

    class Speaker:
        @bundle(granularity=granularity)
        def speak(self):
            return tone + " Go on."

    @bundle(granularity=granularity)
    def joined(n):
        return "|".join(tone for _ in range(n))
    return Speaker(), joined


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_method_of_a_local_class_reading_the_variable_is_a_read(granularity):
    speaker, _ = make_nested(granularity)
    _, events = trace(speaker.speak)
    (call,) = calls_of(events, "Speaker.speak")
    assert [(e[1], e[2]) for e in reads(events)] == [(call[1], f"closure_tone_{granularity}")]


def test_op_mode_a_generator_expression_reading_the_variable_reads_it_for_its_function():
    _, joined = make_nested("op")
    result, events = trace(joined, 2)
    assert result == "Stay calm.|Stay calm."
    (call,) = calls_of(events, "joined")
    assert [(e[1], e[2]) for e in reads(events)] == [(call[1], "closure_tone_op")] * 2


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_marked_function_reading_its_own_closure_variable_reads_the_parameter(granularity):
    @bundle(granularity=granularity)
    def owner():
        style = params.param("Be playful.", name=f"closure_owner_style_{granularity}")
        shout = lambda: style.upper()  # noqa: E731 - makes `style` a closure variable
        return style + shout()

    result, events = trace(owner)
    assert result == "Be playful.BE PLAYFUL."
    (call,) = calls_of(events, "owner")
    assert [(e[1], e[2]) for e in reads(events)] == [(call[1], f"closure_owner_style_{granularity}")]


def make_role(role, granularity):
    prompt = params.param(f"You are the {role}.", name=f"closure_role_{role}_{granularity}")

    @bundle(granularity=granularity)
    def speak():
        return prompt
    return speak


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_runs_declaring_different_parameters_in_one_variable_read_their_own(granularity):
    writer, critic = make_role("writer", granularity), make_role("critic", granularity)
    _, events = trace(critic)
    assert [e[2] for e in reads(events)] == [f"closure_role_critic_{granularity}"]
    _, events = trace(writer)
    assert [e[2] for e in reads(events)] == [f"closure_role_writer_{granularity}"]


def make_level(kind, granularity):
    level = params.param(2, name=f"closure_level_{kind}_{granularity}")  # a small int: shared

    @bundle(granularity=granularity)
    def get_level():
        return level
    return get_level


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_shared_value_of_two_parameters_in_one_variable_is_read_as_neither(granularity):
    low, _ = make_level("low", granularity), make_level("high", granularity)
    _, events = trace(low)
    assert not reads(events)


AGENT_MODULE = '''
import tracer

def make_agent():
    prompt = tracer.param("Be concise.", name=__name__ + ".prompt")

    def answer(question):
        return prompt + " " + question
    return answer
'''


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_a_closure_rewritten_by_the_import_hook_reads_the_parameter(granularity, tmp_path):
    import types

    from tracer import import_hook, marking
    from tracer.config import ModuleMarks

    name = f"closure_hooked_{granularity}"
    path = tmp_path / f"{name}.py"
    path.write_text(AGENT_MODULE)
    marks = ModuleMarks(name, {"make_agent.<locals>.answer": False})
    code, marked, failed = import_hook.instrument_module_code(
        compile(AGENT_MODULE, str(path), "exec"), marks, name, granularity)
    assert (len(marked), failed) == (1, ())
    module = types.ModuleType(name)
    module.__file__ = str(path)
    marking.install_hook_globals(module.__dict__)
    exec(code, module.__dict__)

    answer = module.make_agent()
    result, events = trace(answer, "Why?")
    assert result == "Be concise. Why?"
    assert [e[2] for e in reads(events)] == [f"{name}.prompt"]
    params.registry.get(f"{name}.prompt").set("Be precise.")
    result, events = trace(answer, "Why?")
    assert result == "Be precise. Why?"
    assert [e[2] for e in reads(events)] == [f"{name}.prompt"]


def make_trainable_agent():
    persona = params.param("a pirate", name="closure_trainable_persona")

    @bundle(trainable=True)
    def reply(question):
        return "As " + persona + ": " + question
    return reply


def test_new_source_of_a_trainable_closure_keeps_reading_the_parameter():
    reply = make_trainable_agent()
    source = params.registry.get(f"{__name__}.make_trainable_agent.reply")
    persona = params.registry.get("closure_trainable_persona")
    source.set('def reply(question):\n    return "Speaking as " + persona + ", " + question\n')
    try:
        persona.set("a poet")
        result, events = trace(reply, "hi")
        assert result == "Speaking as a poet, hi"
        assert [e[2] for e in reads(events)] == ["closure_trainable_persona"]
    finally:
        persona.set("a pirate")
