"""`bundle` and the marking registry: same objects, every kind of callable, trainable source."""
from __future__ import annotations

import asyncio
import functools
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tracer import buffers, marking
from tracer.marking import MarkingError, bundle
from tracer.rewrite import RewriteError

REPO = Path(__file__).resolve().parents[2]

@pytest.fixture(autouse=True)
def no_swallowed_hook_errors():
    """Hooks never raise into the program; they count what they swallow. It must stay 0."""
    from tracer import hooks as _hooks
    before = _hooks.errors()
    yield
    assert _hooks.errors() == before, "a hook swallowed an internal error"



def traced_names(fn, *args):
    """Run fn and return the qualnames of the marked calls it made, in order."""
    buffers.drain()
    result = fn(*args)
    names = [marking.registry[r[2]].qualname for _, chunk in buffers.drain() for r in chunk
             if r[0] in ("call", "callref")]
    return result, names


def test_bundle_returns_the_same_function_object_with_its_code_instrumented():
    def original(x):
        return x + 1

    code_before = original.__code__
    decorated = bundle()(original)
    assert decorated is original
    assert original.__code__ is not code_before
    assert marking.is_instrumented(original.__code__)
    assert traced_names(original, 1) == (2, [original.__qualname__])


def test_bundle_without_parentheses_works_too():
    @bundle
    def plain(x):
        return x * 3

    assert traced_names(plain, 2) == (6, [plain.__qualname__])


def test_bundling_twice_instruments_once():
    def f(x):
        return x

    bundle()(f)
    code = f.__code__
    bundle()(f)
    assert f.__code__ is code
    assert traced_names(f, 1)[1] == [f.__qualname__]


class Service:
    factor = 2

    @bundle()
    def method(self, x):
        return x * self.factor

    @bundle()
    @classmethod
    def build(cls):
        return cls()

    @bundle()
    @staticmethod
    def helper(x):
        return -x

    @bundle()
    @property
    def doubled(self):
        return self.factor * 2

    @doubled.setter
    def doubled(self, value):
        self.factor = value // 2


def test_methods_classmethods_staticmethods_and_properties_are_traced_in_place():
    s = Service()
    assert traced_names(s.method, 3) == (6, ["Service.method"])
    assert traced_names(Service.build)[1] == ["Service.build"]
    assert traced_names(Service.helper, 4) == (-4, ["Service.helper"])
    assert traced_names(lambda: s.doubled) == (4, ["Service.doubled"])
    assert isinstance(Service.__dict__["build"], classmethod)
    assert isinstance(Service.__dict__["helper"], staticmethod)
    assert isinstance(Service.__dict__["doubled"], property)


def test_property_setter_marked_through_the_property_object():
    class Box:
        def __init__(self):
            self._v = 0

        def get(self):
            return self._v

        def set(self, value):
            self._v = value

        v = property(get, set)

    bundle()(Box.__dict__["v"])
    b = Box()
    _, names = traced_names(lambda: setattr(b, "v", 5) or b.v)
    assert names == ["test_property_setter_marked_through_the_property_object.<locals>.Box.set",
                     "test_property_setter_marked_through_the_property_object.<locals>.Box.get"]


def test_nested_functions_and_closures_keep_their_cells():
    def make(start):
        count = start

        @bundle()
        def inc():
            nonlocal count
            count += 1
            return count

        return inc

    inc = make(10)
    assert inc() == 11 and inc() == 12
    assert inc.__code__.co_freevars == ("count",)


def test_async_functions_generators_and_async_generators_are_traced():
    @bundle()
    async def coro(x):
        await asyncio.sleep(0)
        return x

    @bundle()
    def gen(n):
        yield from range(n)

    @bundle()
    async def agen(n):
        for i in range(n):
            yield i

    async def collect():
        return [v async for v in agen(2)]

    assert traced_names(asyncio.run, coro(5))[0] == 5
    assert traced_names(lambda: list(gen(3)))[0] == [0, 1, 2]
    assert traced_names(asyncio.run, collect())[0] == [0, 1]
    assert asyncio.iscoroutinefunction(coro)
    assert sys.modules["inspect"].isasyncgenfunction(agen)


def test_stacked_decorators_keep_working_around_a_bundled_function():
    calls = []

    def logged(func):
        @functools.wraps(func)
        def wrapper(*args):
            calls.append(func.__name__)
            return func(*args)
        return wrapper

    @logged
    @bundle()
    def inner(x):
        return x + 1

    @bundle()
    @functools.lru_cache(maxsize=None)
    def cached(x):
        return x * 2

    result, names = traced_names(inner, 1)
    assert result == 2 and calls == ["inner"] and names[0].endswith("inner")
    result, names = traced_names(cached, 2)
    assert result == 4 and names[0].endswith("cached")
    assert traced_names(cached, 2) == (4, [])  # a cache hit never reaches the function


def test_bundle_over_a_wraps_decorator_traces_the_decorated_function():
    def logged(func):
        @functools.wraps(func)
        def wrapper(*args):
            return func(*args)
        return wrapper

    @bundle()
    @logged
    def original(x):
        return x - 1

    result, names = traced_names(original, 5)
    assert result == 4
    assert [n.rsplit(".", 1)[-1] for n in names] == ["original"]
    assert original.__name__ == "original" and original.__wrapped__.__code__ is not None


def test_marking_something_that_is_not_a_python_function_raises_a_clear_error():
    with pytest.raises(MarkingError, match="only Python functions"):
        bundle()(len)
    with pytest.raises(MarkingError, match="True or False"):
        bundle(trainable="yes")


def test_trainable_bundle_is_recorded_in_the_registry_with_its_source_definition():
    @bundle(trainable=True)
    def answer(question):
        """Answer briefly."""
        return question.upper()

    entry = marking.registry[next(fid for fid, e in marking.registry.items() if e.function() is answer)]
    assert entry.trainable is True
    definition = marking.function_def(entry.id)
    assert "def answer(question):" in definition.source
    assert definition.doc == "Answer briefly."
    assert definition.trainable is True
    assert definition.signature == "(question)"
    assert definition.line == answer.__code__.co_firstlineno


def test_function_def_of_an_unknown_id_is_a_key_error():
    with pytest.raises(KeyError):
        marking.function_def(12345)


def test_instrumented_module_level_function_still_pickles_by_reference():
    assert pickle.loads(pickle.dumps(Service.helper)) is Service.helper


def test_instrument_code_result_is_marshallable_and_runs_with_hook_globals():
    source = "def add(a, b):\n    return a + b\n"
    module_code = compile(source, "<marking-test>", "exec")
    func_code = next(c for c in module_code.co_consts if hasattr(c, "co_code"))
    new = marking.instrument_code(func_code, module="m_test", trainable=False)
    import marshal
    new = marshal.loads(marshal.dumps(new))
    namespace = {"__name__": "m_test"}
    marking.install_hook_globals(namespace)
    exec(module_code.replace(co_consts=tuple(new if c is func_code else c for c in module_code.co_consts)),
         namespace)
    assert traced_names(namespace["add"], 2, 3) == (5, ["add"])


def test_instrument_code_refuses_what_is_not_a_code_object():
    with pytest.raises(MarkingError):
        marking.instrument_code("def f(): pass", module="m")


def test_granularity_setting_is_validated():
    with pytest.raises(ValueError, match="'call' or 'op'"):
        marking.set_granularity("lines")
    with pytest.raises(ValueError, match="'call' or 'op'"):
        bundle(granularity="fast")


def test_granularity_comes_from_the_environment_in_a_fresh_process(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        from tracer import buffers, marking
        from tracer.marking import bundle

        @bundle()
        def f(a):
            return a + 1

        f(1)
        tags = sorted({r[0] for _, chunk in buffers.drain() for r in chunk})
        print(marking.get_granularity(), tags)
    """))
    env = dict(os.environ, TRACE_GRANULARITY="op", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "op ['callref', 'op', 'retref']"


def test_a_bad_granularity_in_the_environment_is_reported_by_name(monkeypatch):
    monkeypatch.setenv("TRACE_GRANULARITY", "everything")
    marking.set_granularity(None)
    with pytest.raises(ValueError, match="TRACE_GRANULARITY"):
        marking.get_granularity()


def test_rewrite_errors_are_specific():
    assert issubclass(RewriteError, Exception)


def test_a_function_the_rewriter_cannot_handle_runs_untraced_with_a_warning(monkeypatch):
    from tracer import rewrite

    def refuse(*args, **kwargs):
        raise RewriteError("cannot instrument m:f: simulated")

    monkeypatch.setattr(rewrite, "instrument", refuse)

    def f(x):
        return x * 2

    code = f.__code__
    with pytest.warns(marking.BundleNotTracedWarning, match="runs untraced"):
        assert bundle()(f) is f
    assert f.__code__ is code and f(2) == 4


def test_code_run_with_its_own_builtins_still_reaches_the_hooks():
    namespace = {"__builtins__": dict(vars(__builtins__)) if isinstance(__builtins__, type(sys)) else
                 dict(__builtins__), "__name__": "sandboxed"}
    exec("def f(x):\n    return x + 1\n", namespace)
    bundle()(namespace["f"])
    assert traced_names(namespace["f"], 1) == (2, ["f"])


def _deeply_nested(levels: int):
    indent = "    "
    src = "def deep(x):\n"
    for i in range(levels):
        src += indent * (i + 1) + "try:\n"
    src += indent * (levels + 1) + "raise ValueError(x)\n"
    for i in range(levels, 0, -1):
        src += indent * i + "except ValueError as e:\n" + indent * (i + 1) + ("x = 5\n" if i == levels else "pass\n")
    src += indent + "return x\n"
    namespace: dict = {}
    exec(src, namespace)
    return namespace["deep"]


def test_code_with_no_room_for_another_block_runs_untraced_instead_of_aborting_python():
    import warnings

    deep = _deeply_nested(19)  # its handlers use all 20 of 3.10's per-frame blocks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle()(deep)
    assert deep(1) == 5
    if sys.version_info < (3, 11):
        assert not marking.is_instrumented(deep.__code__)
        assert any("no room" in str(w.message) for w in caught)
    else:  # exception tables: no block stack to overflow
        assert marking.is_instrumented(deep.__code__)
        assert traced_names(deep, 1) == (5, ["deep"])
