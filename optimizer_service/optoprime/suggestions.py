"""Turning the LLM's suggestion into parameter values, or into reasons it cannot be one.

OptoPrime converts with `type(old)(text)`: `list("[3, 4]")` is a list of
characters and a bad int is silently dropped. Here every value is converted
by the parameter's type through json / ast.literal_eval only (never eval,
never a constructor on text), and every refusal comes back with a reason
that the daemon shows to the user and feeds to the LLM on the next step.
New function source must pass `protocol.source_rules.check_function_source`
(parses, same name, same signature, same free variables) before it is sent.
"""
from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from optimizer_service.optoprime.naming import short_name
from optimizer_service.step_types import ParamState


class UnusableValue(ValueError):
    """A suggested value cannot become the parameter's value; the message says why."""


_FENCED_CODE = re.compile(r"^\s*```[a-zA-Z0-9_-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)
_SCALAR_TYPES = {"int", "float", "bool", "NoneType"}


def convert_suggestion(suggestion: dict[str, Any], params: dict[str, ParamState],
                       names_to_params: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a suggestion into (accepted param name -> value, rejected name -> reason).

    Keys may be the prompt names (as shown in #Variables) or the parameters'
    own names.
    """
    accepted: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    for key, raw in suggestion.items():
        pname = names_to_params.get(key, key if key in params else None)
        if pname is None:
            shown = ", ".join(sorted(names_to_params)) or "none"
            rejected[key] = f"{key!r} is not a variable in #Variables (the variables are: {shown})"
            continue
        state = params[pname]
        try:
            accepted[pname] = convert_value(raw, state)
        except UnusableValue as exc:
            rejected[pname] = f"suggested value for {key} rejected: {exc}"
    return accepted, rejected


def convert_value(raw: Any, state: ParamState) -> Any:
    """`raw` as a value of `state`'s type; raises UnusableValue with the reason."""
    if state.kind == "source" or state.type == "code":
        return checked_source(raw, state)
    type_name = state.type or type(state.value).__name__
    if type_name == "str":
        return _to_str(raw, state.value)
    value = raw
    if isinstance(raw, str) and type_name != "bytes":
        value = parse_literal(raw, type_name)
    converter = _CONVERTERS.get(type_name)
    if converter is not None:
        return converter(value)
    # Another type (set, tuple, a user class...): accept a literal of exactly that type.
    if type(value).__name__ == type_name:
        return value
    raise UnusableValue(f"expected a {type_name}, got {_describe(raw)}")


def parse_literal(text: str, type_name: str) -> Any:
    """A JSON or Python literal in `text` (true/false/null accepted); raises UnusableValue."""
    stripped = text.strip()
    lowered = stripped.lower()
    if type_name == "bool" and lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UnusableValue(f"{_short(text)!r} is not a {type_name} literal") from None


def checked_source(raw: Any, state: ParamState) -> str:
    """New function source that passes the shared source rule; raises UnusableValue with its reason."""
    from protocol.source_rules import SourceRejected, check_function_source, parse_function_source, signature_of

    if not isinstance(raw, str):
        raise UnusableValue(f"new code must be a string of Python source, got {_describe(raw)}")
    source = raw
    fenced = _FENCED_CODE.match(source)
    if fenced:
        source = fenced.group(1)
    if not source.strip():
        raise UnusableValue("the new code is empty")
    original = str(state.value or "")
    try:
        name = parse_function_source(original).name
    except SourceRejected:
        name = short_name(state.name)
    signature = state.signature
    if not signature:
        try:
            signature = signature_of(original)
        except SourceRejected:
            raise UnusableValue(f"the current source of {state.name} cannot be read, so new code cannot be "
                                f"checked against its signature") from None
    try:
        check_function_source(source, name=name, signature=signature, freevars=state.freevars)
    except SourceRejected as exc:
        raise UnusableValue(f"new code for {name}() {exc.reason}") from None
    return source


# -- per-type converters ---------------------------------------------------------

def _to_str(raw: Any, current: Any) -> str:
    if isinstance(raw, str):
        stripped = raw.strip()
        # The prompt shows str variables as Python literals ('text'); an LLM
        # that copies the quotes means the text inside them.
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"" and \
                not (isinstance(current, str) and current[:1] == current[-1:] and current[:1] in ("'", '"')):
            try:
                inner = ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                return raw
            if isinstance(inner, str):
                return inner
        return raw
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return str(raw)
    raise UnusableValue(f"expected text (a str), got {_describe(raw)}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise UnusableValue(f"expected an int, got the bool {value}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise UnusableValue(f"{value!r} is not a whole number, and the variable is an int")
    raise UnusableValue(f"expected an int, got {_describe(value)}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise UnusableValue(f"expected a float, got the bool {value}")
    if isinstance(value, (int, float)):
        return float(value)
    raise UnusableValue(f"expected a float, got {_describe(value)}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise UnusableValue(f"expected true or false, got {_describe(value)}")


def _to_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise UnusableValue(f"expected a list, got {_describe(value)}")


def _to_tuple(value: Any) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise UnusableValue(f"expected a tuple, got {_describe(value)}")


def _to_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    raise UnusableValue(f"expected a dict, got {_describe(value)}")


def _to_none(value: Any) -> None:
    if value is None:
        return None
    raise UnusableValue(f"the variable can only be None, got {_describe(value)}")


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            return value.encode("utf-8")
        if isinstance(parsed, bytes):
            return parsed
        return value.encode("utf-8")
    raise UnusableValue(f"expected bytes, got {_describe(value)}")


_CONVERTERS = {
    "int": _to_int, "float": _to_float, "bool": _to_bool, "list": _to_list, "tuple": _to_tuple,
    "dict": _to_dict, "NoneType": _to_none, "bytes": _to_bytes,
}


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {_short(json.dumps(value, default=repr))}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
