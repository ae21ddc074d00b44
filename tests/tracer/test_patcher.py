"""tracer.patcher: live patches of values and function source, atomic, with rollback."""
from __future__ import annotations

import importlib.util
import inspect
import itertools
import linecache
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import pytest

from protocol import messages as m
from tracer import buffers, ids, patcher
from tracer.params import register_source_param

REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count()
_versions = itertools.count(1000)


@pytest.fixture
def load(tmp_path):
    """Import `source` as a fresh module with a unique name; returns the module."""
    def load_module(source: str, name: str | None = None):
        name = name or f"pp_mod_{next(_counter)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    yield load_module


def patch(*items: m.PatchItem, version: int | None = None) -> list[m.PatchResult]:
    return patcher.apply_patch(m.Patch(version=next(_versions) if version is None else version, items=list(items)))


def value(name: str, new) -> m.PatchItem:
    return m.PatchItem(name=name, kind="value", value=new)


def source(name: str, text: str) -> m.PatchItem:
    return m.PatchItem(name=name, kind="source", source=textwrap.dedent(text))


def ok(results: list[m.PatchResult]) -> bool:
    return all(r.ok for r in results)


# -- values -----------------------------------------------------------------------


def test_value_patch_replaces_a_module_global(load):
    mod = load("""
        from tracer import param
        PROMPT = param("Be terse.")
        def prompt():
            return PROMPT
    """)
    assert ok(patch(value(f"{mod.__name__}.PROMPT", "Be thorough.")))
    assert mod.prompt() == "Be thorough."


def test_value_patch_replaces_a_class_attribute(load):
    mod = load("""
        from tracer import param
        class Sampler:
            temperature = param(0.7)
    """)
    assert ok(patch(value("Sampler.temperature", 0.1)))
    assert mod.Sampler.temperature == 0.1


def test_value_patch_reaches_every_live_instance(load):
    mod = load("""
        from tracer import param
        class Persona:
            def __init__(self):
                self.voice = param("calm voice")
    """)
    people = [mod.Persona() for _ in range(5)]
    assert ok(patch(value("Persona.voice", "cheerful voice")))
    assert {p.voice for p in people} == {"cheerful voice"}


def test_value_patch_replaces_default_arguments(load):
    mod = load("""
        from tracer import param
        def fetch(url, timeout=param(5.0), *, tries=param(3)):
            return timeout, tries
    """)
    assert ok(patch(value("fetch.timeout", 9.5), value("fetch.tries", 1)))
    assert mod.fetch("u") == (9.5, 1)


def test_value_of_the_wrong_type_is_rejected_with_the_reason(load):
    mod = load("""
        from tracer import param
        LIMIT = param(3)
    """)
    [result] = patch(value(f"{mod.__name__}.LIMIT", "abc"))
    assert not result.ok and "is a int; got str 'abc'" in result.error
    assert mod.LIMIT == 3


def test_a_value_patch_for_a_parameter_not_declared_yet_applies_when_it_is(load):
    name = f"pp_late_{next(_counter)}"
    [result] = patch(value(f"{name}.LATE", "from the patch"))
    assert result.ok
    module = load("""
        from tracer import param
        LATE = param("declared")
    """, name=name)
    assert module.LATE == "from the patch"


# -- source -----------------------------------------------------------------------


def test_source_patch_swaps_the_code_of_the_same_function_object(load):
    mod = load("""
        def greet(name, punctuation="!"):
            return "Hello " + name + punctuation
        CALLBACKS = {"greet": greet}
    """)
    register_source_param(mod.greet)
    assert ok(patch(source(f"{mod.__name__}.greet", """
        def greet(name, punctuation="!"):
            return "Goodbye " + name + punctuation
    """)))
    assert mod.CALLBACKS["greet"] is mod.greet
    assert mod.CALLBACKS["greet"]("Ann") == "Goodbye Ann!"


def test_source_patch_of_a_method_keeps_super_and_private_names(load):
    mod = load("""
        class Base:
            def describe(self):
                return "base"
        class Child(Base):
            __secret = "s3"
            def describe(self):
                return "child of " + super().describe()
    """)
    register_source_param(mod.Child.describe)
    assert ok(patch(source(f"{mod.__name__}.Child.describe", """
        def describe(self):
            return "new child of " + super().describe() + " " + self.__secret
    """)))
    assert mod.Child().describe() == "new child of base s3"


def test_source_patch_of_classmethods_and_staticmethods(load):
    mod = load("""
        class Tools:
            @classmethod
            def make(cls, n):
                return (cls.__name__, n)
            @staticmethod
            def double(n):
                return n * 2
    """)
    register_source_param(mod.Tools.make)
    register_source_param(mod.Tools.double)
    assert ok(patch(
        source(f"{mod.__name__}.Tools.make", """
            @classmethod
            def make(cls, n):
                return (cls.__name__, n + 1)
        """),
        source(f"{mod.__name__}.Tools.double", """
            def double(n):
                return n * 3
        """),
    ))
    assert (mod.Tools.make(1), mod.Tools().double(2)) == (("Tools", 2), 6)


def test_source_patch_of_a_closure_keeps_its_cells_in_every_closure_of_the_def(load):
    mod = load("""
        def scaler(factor):
            def scale(x):
                return x * factor
            return scale
        double, triple = scaler(2), scaler(3)
    """)
    register_source_param(mod.double)
    assert ok(patch(source(f"{mod.__name__}.scaler.scale", """
        def scale(x):
            return x * factor + 1
    """)))
    assert (mod.double(10), mod.triple(10)) == (21, 31)


def test_getsource_and_linecache_show_the_new_code(load):
    mod = load("""
        def area(w, h):
            return w * h
    """)
    register_source_param(mod.area)
    new = "def area(w, h):\n    return w * h / 2\n"
    version = next(_versions)
    assert ok(patch(source(f"{mod.__name__}.area", new), version=version))
    filename = patcher.patch_filename(version, f"{mod.__name__}.area")
    assert mod.area.__code__.co_filename == filename
    assert inspect.getsource(mod.area) == new
    assert linecache.getline(filename, 2) == "    return w * h / 2\n"


def test_a_traceback_through_new_code_shows_the_new_line(load):
    mod = load("""
        def ratio(a, b):
            return a / b
    """)
    register_source_param(mod.ratio)
    assert ok(patch(source(f"{mod.__name__}.ratio", """
        def ratio(a, b):
            scaled = a * 100
            return scaled // b
    """)))
    with pytest.raises(ZeroDivisionError) as info:
        mod.ratio(1, 0)
    text = "".join(traceback.format_exception(info.type, info.value, info.tb))
    assert '<trace-live patch v' in text and "return scaled // b" in text


@pytest.mark.parametrize("new, reason", [
    ("def area(w, h):\n    return (w *\n", "does not parse: line 2"),
    ("def area(w):\n    return w\n", "signature changed from (w, h) to (w)"),
    ("def size(w, h):\n    return w\n", "defines 'size' but the parameter is function 'area'"),
    ("def area(w, h):\n    yield w * h\n", "the original is a plain function; the new source makes a generator"),
    ("def area(w, h):\n    return w * undefined_helper(h)\n", "uses names ['undefined_helper'] that are not defined"),
    ("def area(w, h):\n    nonlocal w2\n    return w\n", "does not compile: line 2: no binding for nonlocal 'w2' found"),
    ("import math\ndef area(w, h):\n    return w\n", "must contain only the definition of 'area'"),
])
def test_a_rejected_source_leaves_the_old_code_and_says_why(load, new, reason):
    mod = load("""
        def area(w, h):
            return w * h
    """)
    register_source_param(mod.area)
    [result] = patch(source(f"{mod.__name__}.area", new))
    assert not result.ok and reason in result.error
    assert mod.area(2, 3) == 6
    assert "return w * h" in inspect.getsource(mod.area)


def test_a_closure_patch_with_other_free_variables_is_rejected(load):
    mod = load("""
        def counter(start):
            step = 1
            def advance(x):
                return x + start
            return advance
        advance = counter(10)
    """)
    register_source_param(mod.advance)
    [result] = patch(source(f"{mod.__name__}.counter.advance", """
        def advance(x):
            return x + 1
    """))
    assert not result.ok and "uses free variables [] but the original closure has ['start']" in result.error
    assert mod.advance(1) == 11


def test_a_value_patch_for_a_function_parameter_is_rejected(load):
    mod = load("""
        def tool(x):
            return x
    """)
    register_source_param(mod.tool)
    [result] = patch(value(f"{mod.__name__}.tool", "def tool(x): return 1"))
    assert not result.ok and "send its new source with kind 'source'" in result.error


def test_a_source_patch_for_an_unknown_function_is_rejected():
    [result] = patch(source("nowhere.nothing", "def nothing():\n    pass\n"))
    assert not result.ok and "no trainable function 'nowhere.nothing'" in result.error


# -- atomicity, rollback ------------------------------------------------------------


def test_a_patch_whose_later_item_is_rejected_changes_nothing(load):
    mod = load("""
        from tracer import param
        TITLE = param("Report")
        def body(x):
            return x
    """)
    register_source_param(mod.body)
    results = patch(value(f"{mod.__name__}.TITLE", "Summary"),
                    source(f"{mod.__name__}.body", "def body(x, y):\n    return y\n"))
    assert [r.ok for r in results] == [False, False]
    assert results[0].error.startswith(f"not applied: '{mod.__name__}.body' in the same patch failed")
    assert mod.TITLE == "Report" and mod.body(4) == 4


def test_a_failure_while_applying_rolls_back_the_items_already_applied(load):
    mod = load("""
        from tracer import param
        HEADER = param("top header")
        class Guarded:
            def __init__(self):
                self.mode = param("safe mode")
            def __setattr__(self, key, value):
                if value == "forbidden mode":
                    raise ValueError("mode refused by the program")
                object.__setattr__(self, key, value)
        guarded = Guarded()
    """)
    results = patch(value(f"{mod.__name__}.HEADER", "new header"), value("Guarded.mode", "forbidden mode"))
    assert [r.ok for r in results] == [False, False]
    assert "mode refused by the program" in results[1].error
    assert (mod.HEADER, mod.guarded.mode) == ("top header", "safe mode")


def test_rollback_to_restores_what_that_version_left(load):
    mod = load("""
        from tracer import param
        TONE = param("neutral tone")
        def shout(s):
            return s.upper()
    """)
    register_source_param(mod.shout)
    first, second = next(_versions), next(_versions)
    assert ok(patch(value(f"{mod.__name__}.TONE", "warm tone"),
                    source(f"{mod.__name__}.shout", "def shout(s):\n    return s.upper() + '!'\n"), version=first))
    assert ok(patch(value(f"{mod.__name__}.TONE", "cold tone"),
                    source(f"{mod.__name__}.shout", "def shout(s):\n    return s.upper() + '!!'\n"), version=second))
    assert ok(patcher.rollback_to(first))
    assert (mod.TONE, mod.shout("a")) == ("warm tone", "A!")
    assert patcher.current_version() == first


def test_rollback_to_zero_restores_the_declared_values_and_the_original_code(load):
    mod = load("""
        from tracer import param
        SIZE = param(10)
        def grow(n):
            return n + 1
    """)
    register_source_param(mod.grow)
    original_code = mod.grow.__code__
    assert ok(patch(value(f"{mod.__name__}.SIZE", 20), source(f"{mod.__name__}.grow", "def grow(n):\n    return n + 2\n")))
    patcher.rollback_to(0)
    assert (mod.SIZE, mod.grow(1)) == (10, 2)
    assert mod.grow.__code__ is original_code
    assert "return n + 1" in inspect.getsource(mod.grow)


def test_history_lists_the_versions_of_a_parameter(load):
    mod = load("""
        from tracer import param
        MOOD = param("fine mood")
    """)
    name = f"{mod.__name__}.MOOD"
    first, second = next(_versions), next(_versions)
    patch(value(name, "good mood"), version=first)
    patch(value(name, "great mood"), version=second)
    assert patcher.history(name) == [(0, "fine mood"), (first, "good mood"), (second, "great mood")]


def test_record_set_of_a_source_parameter_goes_through_the_patcher(load):
    mod = load("""
        def twice(x):
            return 2 * x
    """)
    record = register_source_param(mod.twice)
    record.set("def twice(x):\n    return x + x + 1\n")
    assert mod.twice(2) == 5 and record.get() == "def twice(x):\n    return x + x + 1\n"
    with pytest.raises(patcher.PatchRejected, match="signature changed"):
        record.set("def twice():\n    return 0\n")


# -- safe point, threads, tracing ---------------------------------------------------


def test_a_call_already_running_finishes_on_the_old_code(load):
    mod = load("""
        def work(gate, started):
            started.set()
            gate.wait(5)
            return "old"
    """)
    register_source_param(mod.work)
    gate, started, results = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=lambda: results.append(mod.work(gate, started)))
    thread.start()
    assert started.wait(5)
    assert ok(patch(source(f"{mod.__name__}.work", "def work(gate, started):\n    return 'new'\n")))
    gate.set()
    thread.join(5)
    assert results == ["old"]
    assert mod.work(gate, started) == "new"


def test_a_patched_marked_function_keeps_being_traced(load):
    mod = load("""
        import tracer
        @tracer.bundle(trainable=True)
        def label(x):
            return "label " + x
    """)
    func_id = ids.function_id(mod.__name__, "label")
    assert ok(patch(source(f"{mod.__name__}.label", "def label(x):\n    return 'tag ' + x\n")))
    buffers.drain()
    assert mod.label("a") == "tag a"
    calls = [r for _, records in buffers.drain() for r in records if r[0] == "call" and r[2] == func_id]
    assert len(calls) == 1


def test_without_marking_new_source_is_swapped_uninstrumented_and_the_result_says_so(tmp_path):
    script = tmp_path / "no_marking.py"
    script.write_text(textwrap.dedent("""
        import sys
        sys.modules["tracer.marking"] = None  # as if the rewriter were not installed
        from protocol import messages as m
        from tracer import patcher
        from tracer.params import register_source_param
        def f(x):
            return x
        register_source_param(f)
        [r] = patcher.apply_patch(m.Patch(version=1, items=[m.PatchItem("no_marking.f", "source", source="def f(x):\\n    return -x\\n")]))
        print(r.ok, f(2), r.error)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True -2 applied uninstrumented: tracer.marking is not available")


def test_closures_made_after_a_source_patch_run_the_new_code_too(load):
    mod = load("""
        def make_adder(n):
            def add(x):
                return x + n
            return add
        first = make_adder(1)
    """)
    register_source_param(mod.first)
    version = next(_versions)
    assert ok(patch(source(f"{mod.__name__}.make_adder.add", "def add(x):\n    return x + n * 100\n"), version=version))
    assert (mod.first(1), mod.make_adder(2)(1)) == (101, 201)
    patcher.rollback_to(version - 1)
    assert (mod.first(1), mod.make_adder(2)(1)) == (2, 3)


def test_generator_and_async_functions_take_new_source_of_their_kind(load):
    import asyncio

    mod = load("""
        def count(n):
            for i in range(n):
                yield i
        async def fetch(x):
            return x
    """)
    register_source_param(mod.count)
    register_source_param(mod.fetch)
    assert ok(patch(source(f"{mod.__name__}.count", "def count(n):\n    for i in range(n):\n        yield i * 10\n"),
                    source(f"{mod.__name__}.fetch", "async def fetch(x):\n    return x * 2\n")))
    assert list(mod.count(3)) == [0, 10, 20]
    assert asyncio.run(mod.fetch(4)) == 8


def test_a_parameter_declared_not_trainable_refuses_patches(load):
    mod = load("""
        from tracer import param
        FIXED = param("do not touch", trainable=False)
    """)
    [result] = patch(value(f"{mod.__name__}.FIXED", "touched"))
    assert not result.ok and "declared trainable=False" in result.error
    assert mod.FIXED == "do not touch"


def test_other_threads_pick_up_the_new_code_at_their_next_call(load):
    mod = load("""
        def version():
            return "old"
    """)
    register_source_param(mod.version)
    seen, stop = [], threading.Event()

    def caller():
        while not stop.is_set():
            seen.append(mod.version())

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        while not seen:
            time.sleep(0.001)
        assert ok(patch(source(f"{mod.__name__}.version", "def version():\n    return 'new'\n")))
        mark = len(seen)
        while len(seen) < mark + 100:
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join(5)
    assert seen[0] == "old" and set(seen[mark + 1:]) == {"new"}
