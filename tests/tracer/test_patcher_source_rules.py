"""protocol.source_rules: the rule new function source must pass on both sides."""
from __future__ import annotations

import pytest

from protocol.source_rules import SourceRejected, check_function_source, signature_of

ORIGINAL_SIGNATURE = "(x, y=2, *args, key='k', **options)"


def check(source: str, *, name: str = "f", signature: str = ORIGINAL_SIGNATURE, freevars=()) -> None:
    check_function_source(source, name=name, signature=signature, freevars=list(freevars))


def test_source_with_the_same_name_signature_and_free_variables_is_accepted():
    check("def f(x, y=2, *args, key='k', **options):\n    return x + n\n", freevars=["n"])


def test_decorators_annotations_and_indentation_are_allowed():
    check("    @staticmethod\n    def f(x: int, y: int = 2, *args, key: str = 'k', **options) -> int:\n        return x\n")


@pytest.mark.parametrize("source, reason", [
    ("def f(x, y=2, *args, key='k', **options):\n    return (x\n", "does not parse: line 2: '(' was never closed"),
    ("x = 1\n", "does not define a function: expected one 'def' of 'f'"),
    ("def f(x, y=2, *args, key='k', **options): pass\ndef g(): pass\n", "defines 2 functions ('f', 'g')"),
    ("import os\ndef f(x, y=2, *args, key='k', **options): pass\n", "found also: Import at line 1"),
    ("def bar(x, y=2, *args, key='k', **options): pass\n", "defines 'bar' but the parameter is function 'f'"),
])
def test_source_that_is_not_one_function_named_like_the_parameter_is_rejected(source, reason):
    with pytest.raises(SourceRejected) as info:
        check(source)
    assert reason in info.value.reason


@pytest.mark.parametrize("header", [
    "def f(x):",
    "def f(x, z=2, *args, key='k', **options):",
    "def f(x, y, *args, key='k', **options):",
    "def f(x, y=3, *args, key='k', **options):",
    "def f(x, y=2, *, key='k', **options):",
    "def f(x, /, y=2, *args, key='k', **options):",
    "def f(x, y=2, *args, key='k'):",
])
def test_a_changed_signature_is_rejected_naming_both(header):
    with pytest.raises(SourceRejected) as info:
        check(f"{header}\n    return x\n")
    assert info.value.reason.startswith(f"signature changed from {ORIGINAL_SIGNATURE} to (")


def test_a_default_given_as_an_expression_is_not_compared_with_the_value():
    check("def f(a, b=DEFAULT):\n    return a\n", signature="(a, b=5)")


def test_different_free_variables_are_rejected_naming_both():
    with pytest.raises(SourceRejected, match=r"uses free variables \[\] but the original closure has \['n'\]"):
        check("def f(x, y=2, *args, key='k', **options):\n    return x\n", freevars=["n"])


def test_zero_argument_super_needs_the_class_cell_the_original_had():
    check("def f(self):\n    return super().f()\n", signature="(self)", freevars=["__class__"])
    with pytest.raises(SourceRejected, match="__class__"):
        check("def f(self):\n    return super().f()\n", signature="(self)")


def test_source_that_does_not_compile_is_rejected():
    with pytest.raises(SourceRejected, match="does not compile: line 2: no binding for nonlocal 'q' found"):
        check("def f(x, y=2, *args, key='k', **options):\n    nonlocal q\n")


def test_source_rejected_is_a_value_error_with_the_reason():
    with pytest.raises(ValueError) as info:
        check("def g(): pass")
    assert isinstance(info.value, SourceRejected) and str(info.value) == info.value.reason


def test_an_unreadable_original_signature_is_the_callers_error_not_the_sources():
    with pytest.raises(ValueError, match="is not a parameter list") as info:
        check("def f(): pass", signature="x, y")
    assert not isinstance(info.value, SourceRejected)


def test_signature_of_source_and_of_functions():
    def sample(a, b=2, *rest, c, d=None, **kw) -> int:
        return a

    class Owner:
        @classmethod
        def build(cls, n: int = 1):
            return n

    assert signature_of("def s(a, /, b=[1, 2], *, c): pass") == "(a, /, b=[1, 2], *, c)"
    assert signature_of(sample) == "(a, b=2, *rest, c, d=None, **kw)"
    assert signature_of(Owner.build) == "(cls, n=1)"


def test_signature_of_a_function_without_source_renders_unknown_defaults_as_ellipsis():
    namespace: dict = {}
    exec("def made(a, b=object(), c=3): pass", namespace)
    assert signature_of(namespace["made"]) == "(a, b=..., c=3)"
    check("def made(a, b=SENTINEL, c=3): pass", name="made", signature="(a, b=..., c=3)")


def test_an_unknown_signature_skips_only_the_signature_rule():
    check("def f(a):\n    return a\n", signature="")
    with pytest.raises(SourceRejected, match="defines 'g'"):
        check("def g(a):\n    return a\n", signature="")
