"""Trace event tags and layouts (docs/internals.md §3), and their validation.

An event is an array whose first item is its tag. The tracer builds them as
tuples; they arrive as lists. `EventBatch` decoding checks only that each
event is an array (cheap), and the daemon calls `validate_event` on ingest,
which checks the layout of one event and names the tag and field at fault:
``call.parent_op: expected int or None, got str``.

Extra trailing items are allowed (a newer minor version may append fields);
an unknown tag raises `UnknownEvent`, which a receiver may skip.
"""
from __future__ import annotations

from typing import Any, Callable, Final

from .errors import InvalidMessage, UnknownEvent
from .schema import short_repr, type_label
from .values import validate_summary

VALUE: Final = "v"           # ["v", node, summary]
PARAM: Final = "param"       # ["param", node, name]
CALL: Final = "call"         # ["call", op, func, parent_op, [[argname, node], ...], thread, t]
# `t` (call, ret, exc) is a time in ns, or None when the tracer did not take
# one: it does not by default, a clock read costs ~15% of a traced call.
READ: Final = "read"         # ["read", op, name, node]
RETURN: Final = "ret"        # ["ret", op, node, t]
EXCEPTION: Final = "exc"     # ["exc", op, type_name, message, traceback_text, t]
OPERATION: Final = "op"      # ["op", op, parent_op, site, opname, [node, ...], out_node]

# Field names per tag, in array order after the tag: index i + 1 of an event
# holds LAYOUTS[tag][i]. Both sides use these names in messages and code.
LAYOUTS: Final[dict[str, tuple[str, ...]]] = {
    VALUE: ("node", "summary"),
    PARAM: ("node", "name"),
    CALL: ("op", "func", "parent_op", "args", "thread", "t"),
    READ: ("op", "name", "node"),
    RETURN: ("op", "node", "t"),
    EXCEPTION: ("op", "type_name", "message", "traceback_text", "t"),
    OPERATION: ("op", "parent_op", "site", "opname", "inputs", "out_node"),
}


def _int(value: Any, path: str) -> None:
    if type(value) is not int:
        raise InvalidMessage(path, f"expected int, got {type_label(value)}")


def _int_or_none(value: Any, path: str) -> None:
    if value is not None and type(value) is not int:
        raise InvalidMessage(path, f"expected int or None, got {type_label(value)}")


def _str(value: Any, path: str) -> None:
    if type(value) is not str:
        raise InvalidMessage(path, f"expected str, got {type_label(value)}")


def _summary(value: Any, path: str) -> None:
    validate_summary(value, path)


def _call_args(value: Any, path: str) -> None:
    # [[argname, node], ...]; argname is the parameter name, or its position for *args.
    if type(value) not in (list, tuple):
        raise InvalidMessage(path, f"expected a list of [argname, node] pairs, got {type_label(value)}")
    for index, pair in enumerate(value):
        if (type(pair) not in (list, tuple) or len(pair) != 2 or type(pair[0]) not in (str, int)
                or type(pair[1]) is not int):
            raise InvalidMessage(f"{path}[{index}]", f"expected [argname, node], got {short_repr(pair)}")


def _nodes(value: Any, path: str) -> None:
    if type(value) not in (list, tuple):
        raise InvalidMessage(path, f"expected a list of node ids, got {type_label(value)}")
    for index, node in enumerate(value):
        if type(node) is not int:
            raise InvalidMessage(f"{path}[{index}]", f"expected int, got {type_label(node)}")


_CHECKS: dict[str, tuple[Callable[[Any, str], None], ...]] = {
    VALUE: (_int, _summary),
    PARAM: (_int, _str),
    CALL: (_int, _int, _int_or_none, _call_args, _int, _int_or_none),
    READ: (_int, _str, _int),
    RETURN: (_int, _int, _int_or_none),
    EXCEPTION: (_int, _str, _str, _str, _int_or_none),
    OPERATION: (_int, _int, _int, _str, _nodes, _int),
}


def validate_event(event: Any) -> None:
    """Check one event's layout; raise InvalidMessage naming ``tag.field`` (UnknownEvent for a new tag)."""
    if type(event) not in (list, tuple) or not event:
        raise InvalidMessage("event", f"expected a non-empty event array, got {short_repr(event)}")
    tag = event[0]
    if type(tag) is not str:
        raise InvalidMessage("event[0]", f"expected the event tag (str), got {type_label(tag)}")
    checks = _CHECKS.get(tag)
    if checks is None:
        raise UnknownEvent("event", f"unknown event tag {short_repr(tag)}")
    names = LAYOUTS[tag]
    if len(event) - 1 < len(names):
        missing = names[len(event) - 1]
        raise InvalidMessage(f"{tag}.{missing}", f"missing (a {tag} event has {len(names) + 1} items, "
                                                 f"this one has {len(event)})")
    for index, (name, check) in enumerate(zip(names, checks), start=1):
        check(event[index], f"{tag}.{name}")
