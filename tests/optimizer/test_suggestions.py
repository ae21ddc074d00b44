"""Converting suggested values to the parameter's type, and checking suggested code."""
from __future__ import annotations

import pytest

from optimizer_service.optoprime.suggestions import UnusableValue, convert_suggestion, convert_value
from optimizer_service.step_types import ParamState


def param(type_name: str, value, **kw) -> ParamState:
    return ParamState("p", type_name, value, **kw)


@pytest.mark.parametrize("type_name, current, raw, expected", [
    ("list", [1, 2], "[3, 4]", [3, 4]),
    ("list", [1, 2], [3, 4], [3, 4]),
    ("int", 3, "4", 4),
    ("int", 3, 7, 7),
    ("int", 3, 8.0, 8),
    ("float", 1.5, "4.5", 4.5),
    ("float", 1.5, 2, 2.0),
    ("bool", False, "true", True),
    ("bool", False, "False", False),
    ("dict", {"a": 1}, '{"a": 2}', {"a": 2}),
    ("dict", {"a": 1}, "{'a': 2, 'b': None}", {"a": 2, "b": None}),
    ("str", "hi", "hello there", "hello there"),
    ("str", "hi", "'hello there'", "hello there"),
    ("str", "hi", 42, "42"),
    ("tuple", (1, 2), "(3, 4)", (3, 4)),
    ("NoneType", None, "null", None),
])
def test_values_are_converted_by_the_parameters_type(type_name, current, raw, expected):
    result = convert_value(raw, param(type_name, current))
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("type_name, current, raw, reason", [
    ("int", 3, "4.5", "4.5 is not a whole number"),
    ("int", 3, True, "got the bool True"),
    ("int", 3, "many", "'many' is not a int literal"),
    ("float", 1.0, "[1]", "expected a float, got list"),
    ("bool", True, 1, "expected true or false"),
    ("list", [], "not a list", "is not a list literal"),
    ("list", [], {"a": 1}, "expected a list, got dict"),
    ("dict", {}, "[1, 2]", "expected a dict"),
    ("str", "", ["a"], "expected text"),
])
def test_values_of_the_wrong_type_are_rejected_with_a_reason(type_name, current, raw, reason):
    with pytest.raises(UnusableValue, match=reason):
        convert_value(raw, param(type_name, current))


def test_suggestion_maps_prompt_names_back_to_parameters_and_reports_unknown_names():
    params = {"app:x": ParamState("app:x", "float", 1.0), "app:n": ParamState("app:n", "int", 1)}
    accepted, rejected = convert_suggestion({"x": "2.5", "n": "2.5", "y": 1}, params, {"x": "app:x", "n": "app:n"})
    assert accepted == {"app:x": 2.5}
    assert "not a whole number" in rejected["app:n"]
    assert "'y' is not a variable in #Variables" in rejected["y"]


OLD = '''def greet(self, lang, user_name):
    """Produce a greeting based on the language"""
    return f"Hola, {user_name}!"
'''


def code_param(**kw) -> ParamState:
    return ParamState("app:Agent.greet", "code", "    " + OLD.replace("\n", "\n    "), kind="source",
                      signature="(self, lang, user_name)", **kw)


def test_valid_new_code_is_accepted():
    new = OLD.replace('return f"Hola, {user_name}!"', 'return ("Hola" if lang == "es" else "Hello") + f", {user_name}!"')
    assert convert_value(new, code_param()) == new


def test_code_in_a_markdown_fence_is_unwrapped():
    new = OLD.replace("Hola", "Hello")
    assert convert_value(f"```python\n{new}```", code_param()) == new.rstrip("\n")


@pytest.mark.parametrize("new, reason", [
    (OLD.replace("return f", "return f("), "does not parse"),
    (OLD.replace("(self, lang, user_name)", "(self, lang)"), "signature changed"),
    (OLD.replace("def greet", "def hello"), "greet"),
    ("", "empty"),
    (42, "must be a string"),
])
def test_bad_code_is_rejected_with_the_reason(new, reason):
    with pytest.raises(UnusableValue, match=reason):
        convert_value(new, code_param())


def test_code_that_drops_a_closure_variable_is_rejected():
    # CPython only swaps in a code object with the same closure cells.
    state = ParamState("app:outer.inner", "code", "def inner(x):\n    return x + offset\n", kind="source",
                       signature="(x)", freevars=["offset"])
    with pytest.raises(UnusableValue, match="free variables"):
        convert_value("def inner(x):\n    return x * 2\n", state)
    assert convert_value("def inner(x):\n    return x - offset\n", state).startswith("def inner")
