"""Value summaries: what the daemon learns about a Python value (docs/internals.md §2).

`summarize(obj)` never runs user code except one guarded, bounded `repr()`
of an object that is not an exact builtin type. Builtin scalars are read
directly; exact builtin containers (`type(x) is list`, never isinstance, so
a subclass's `__iter__`/`__len__` is never called) are walked with bounded
depth, length and total size. Every summary packs with msgpack.

Keys of a summary (every summary has "t", the type name, and "id", `id(obj)`):

    "v"        verbatim value: None, bool, int (64-bit), float, str, bytes
    "len"      full length (containers; str/bytes/digits when truncated)
    "trunc"    True when something was left out
    "esc"      True when a str held lone surrogates, written as \\udXXX escapes
    "big"      decimal digits of an int beyond 64 bits ("0x..." leading hex
               digits for ints too long to print in decimal cheaply)
    "special"  "nan", "inf" or "-inf" for non-finite floats
    "items"    container items as summaries; dict items as [key, value] pairs
    "cycle"    True for a container already being summarized (a cycle)
    "r"        bounded repr of anything else ("<repr failed: ...>" if it raised)

`render(summary)` writes it back as Python-like text for prompts; it accepts
anything (a summary from the wire may be garbage) and never raises.
`validate_summary` checks a received summary's shape.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .errors import InvalidMessage
from .schema import INT_MIN, UINT_MAX, type_label

MAX_DEPTH = 3            # container levels shown with their items
MAX_ITEMS = 20           # items shown per container
MAX_TEXT = 256           # characters of a str / bytes / repr / digits shown
MAX_NODES = 200          # summaries inside one summary, in total
MAX_SUMMARY_NESTING = 32  # containers a received summary may nest (validate/render bound)

_CONTAINERS = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset", dict: "dict"}
_SPECIAL_FLOATS = {"nan", "inf", "-inf"}
_DECIMAL_BITS = 4000 * 3  # ints up to ~3600 digits are shown in decimal (below CPython's 4300-digit limit)
_TYPE_QUALNAME = type.__dict__["__qualname__"].__get__
_TYPE_MODULE = type.__dict__["__module__"].__get__
_isfinite = math.isfinite
_NoneType = type(None)


def summarize(obj: Any, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
              max_text: int = MAX_TEXT, max_nodes: int = MAX_NODES) -> dict:
    """A bounded, msgpack-ready summary of `obj` (format in the module docstring)."""
    # The tracer summarises hundreds of thousands of values a second, most of
    # them small scalars: those are built right here, and a container of
    # nothing but such scalars without the summarizer object either.
    summary = verbatim_summary(obj, max_text)
    if summary is not None:
        return summary
    kind = type(obj)
    if kind is str or kind is bytes:  # text that is not short ASCII: no summarizer state needed either
        return _text_summary(obj, kind.__name__, max_text)
    if (kind is list or kind is tuple) and 0 < max_depth and len(obj) <= max_items and len(obj) <= max_nodes:
        summary = _flat_sequence(obj, _CONTAINERS[kind], max_text)
        if summary is not None:
            return summary
    return _Summarizer(max_depth, max_items, max_text, max_nodes).summary(obj, 0)


def verbatim_summary(obj: Any, max_text: int = MAX_TEXT) -> dict | None:
    """What `summarize` gives for a scalar shown as it is (None, bool, 64-bit int,
    finite float, short ASCII str); None for anything else.

    For callers that summarise many values and want the commonest ones
    without the rest of `summarize` (the tracer's provenance resolver).
    """
    kind = type(obj)
    if kind is str:
        if len(obj) <= max_text and obj.isascii():
            return {"t": "str", "id": id(obj), "v": obj}
    elif kind is int:
        if INT_MIN <= obj <= UINT_MAX:
            return {"t": "int", "id": id(obj), "v": obj}
    elif kind is float:
        if _isfinite(obj):
            return {"t": "float", "id": id(obj), "v": obj}
    elif kind is bool or kind is _NoneType:
        return {"t": kind.__name__, "id": id(obj), "v": obj}
    return None


def _flat_sequence(obj: list | tuple, name: str, max_text: int) -> dict | None:
    """The summary of a short list/tuple whose items are all verbatim scalars, else None.

    Exactly what the summarizer gives for it (every item shown, no cut), in
    one pass with no summarizer state: a flat sequence cannot hold a cycle.
    """
    items = []
    for item in obj:
        summary = verbatim_summary(item, max_text)
        if summary is None:
            return None
        items.append(summary)
    if len(items) != len(obj):  # another thread resized the list meanwhile
        return None
    return {"t": name, "id": id(obj), "len": len(items), "items": items, "trunc": False}


def _text_summary(obj: Any, name: str, max_text: int) -> dict:
    """The summary of a str, bytes or bytearray: its head, verbatim."""
    size = len(obj)
    shown = obj[:max_text]
    if name == "bytearray":
        shown = bytes(shown)
    out = {"t": name, "id": id(obj), "v": shown}
    if size > max_text:
        out["len"] = size
        out["trunc"] = True
    if name == "str" and not shown.isascii():
        escaped = _utf8_safe(shown)
        if escaped is not shown:
            out["v"] = escaped
            out["esc"] = True
    return out


class _Summarizer:
    def __init__(self, max_depth: int, max_items: int, max_text: int, max_nodes: int):
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_text = max_text
        self.nodes_left = max_nodes
        self.open_containers: set[int] = set()

    def summary(self, obj: Any, depth: int) -> dict:
        summary = verbatim_summary(obj, self.max_text)
        if summary is not None:
            return summary
        kind = type(obj)
        if kind is int:
            return self._big_int(obj)
        if kind is str:
            return _text_summary(obj, "str", self.max_text)
        if kind is float:  # not finite
            return {"t": "float", "id": id(obj), "special": "nan" if obj != obj else ("inf" if obj > 0 else "-inf")}
        if kind is bytes or kind is bytearray:
            return _text_summary(obj, kind.__name__, self.max_text)
        name = _CONTAINERS.get(kind)
        if name is not None:
            return self._container(obj, name, depth)
        return self._repr(obj, kind)

    def _big_int(self, obj: int) -> dict:
        digits = None
        if obj.bit_length() <= _DECIMAL_BITS:
            try:
                digits = str(obj)
            except ValueError:  # the user lowered sys.set_int_max_str_digits()
                pass
        if digits is None:
            # str() of a huge int is quadratic (and refused beyond the digit
            # limit): show the leading hex digits, taken by a linear shift.
            size = (obj.bit_length() + 3) // 4
            shift = 4 * max(0, size - self.max_text)
            digits = ("-" if obj < 0 else "") + hex(abs(obj) >> shift)
            out = {"t": "int", "id": id(obj), "big": digits}
            if shift:
                out["len"] = size
                out["trunc"] = True
            return out
        out = {"t": "int", "id": id(obj), "big": digits[: self.max_text]}
        if len(digits) > self.max_text:
            out["len"] = len(digits)
            out["trunc"] = True
        return out

    def _container(self, obj: Any, name: str, depth: int) -> dict:
        if (name == "list" or name == "tuple") and depth < self.max_depth \
                and len(obj) <= self.max_items and len(obj) <= self.nodes_left:
            flat = _flat_sequence(obj, name, self.max_text)
            if flat is not None:
                self.nodes_left -= flat["len"]
                return flat
        out = {"t": name, "id": id(obj), "len": len(obj)}
        if id(obj) in self.open_containers:
            out["cycle"] = True
            return out
        items: list = []
        out["items"] = items
        if depth >= self.max_depth or self.nodes_left <= 0:
            out["trunc"] = len(obj) > 0
            return out
        self.open_containers.add(id(obj))
        summary = self.summary
        inner = depth + 1
        max_items = self.max_items
        try:
            if name == "dict":
                for key, value in obj.items():
                    if len(items) >= max_items or self.nodes_left < 2:
                        break
                    self.nodes_left -= 2
                    items.append([summary(key, inner), summary(value, inner)])
            else:
                for item in obj:
                    if len(items) >= max_items or self.nodes_left < 1:
                        break
                    self.nodes_left -= 1
                    items.append(summary(item, inner))
        except RuntimeError:
            # Another thread resized the dict or set while we walked it: keep what we saw.
            pass
        finally:
            self.open_containers.discard(id(obj))
        out["trunc"] = len(items) < out["len"]
        return out

    def _repr(self, obj: Any, kind: type) -> dict:
        text, truncated = guarded_repr(obj, self.max_text)
        return {"t": qualified_type_name(kind), "id": id(obj), "r": text, "trunc": truncated}


def qualified_type_name(kind: type) -> str:
    """`module.Qualname` of a type ("int" for builtins), read without running user code."""
    try:
        module = _TYPE_MODULE(kind)
        qualname = _TYPE_QUALNAME(kind)
    except Exception:
        return "?"
    if type(module) is not str or module == "builtins":
        return qualname
    return f"{module}.{qualname}"


def guarded_repr(obj: Any, limit: int = MAX_TEXT) -> tuple[str, bool]:
    """(repr text cut to `limit` characters, whether it was cut). Never raises.

    A `__repr__` that raises gives "<repr failed: ExcType: message>"; one that
    returns a non-str is reported the same way (repr() itself refuses it).
    """
    try:
        text = repr(obj)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # a user __repr__ may raise anything, even SystemExit
        return f"<repr failed: {_describe_error(error)}>"[: limit + 40], False
    text = str.__str__(text)  # an exact str even if __repr__ returned a str subclass
    truncated = len(text) > limit
    if truncated:
        text = text[:limit]
    return _utf8_safe(text), truncated


def _describe_error(error: BaseException) -> str:
    name = type(error).__name__
    try:
        message = str.__str__(str(error))
    except BaseException:
        message = ""
    message = _utf8_safe(message[:100])
    return f"{name}: {message}" if message else name


def _utf8_safe(text: str) -> str:
    """`text` itself, or with lone surrogates written as backslash escapes so msgpack can pack it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- render --------------------------------------------------------------


def render(summary: Any) -> str:
    """Python-like text for a summary: 'abc', 2.5, [1, 2], Thing(a=1); cuts show as '...'. Never raises."""
    try:
        return _render(summary, 0)
    except Exception:
        return "<unrenderable value>"


_ESCAPED_SURROGATE = re.compile(r"\\\\(ud[89a-f][0-9a-f]{2})")
_BRACKETS = {"list": ("[", "]"), "tuple": ("(", ")"), "set": ("{", "}"),
             "frozenset": ("frozenset({", "})"), "dict": ("{", "}")}


def _render(summary: Any, depth: int) -> str:
    if type(summary) is not dict:
        return "<unrenderable value>"
    kind = summary.get("t")
    kind = kind if type(kind) is str else "?"
    cut = summary.get("trunc") is True
    if depth > MAX_SUMMARY_NESTING:
        return "..."
    if "v" in summary:
        return _render_verbatim(summary["v"], kind, cut, summary.get("esc") is True)
    if type(summary.get("special")) is str and summary["special"] in _SPECIAL_FLOATS:
        return summary["special"]
    if type(summary.get("big")) is str:
        return summary["big"] + ("..." if cut else "")
    if kind in _BRACKETS and ("items" in summary or "cycle" in summary):
        return _render_container(summary, kind, cut, depth)
    if type(summary.get("r")) is str:
        return summary["r"] + ("..." if cut else "")
    return f"<{kind}>"


def _render_verbatim(value: Any, kind: str, cut: bool, escaped: bool) -> str:
    text = repr(value) if type(value) in (type(None), bool, int, float, str, bytes) else "<unrenderable value>"
    if escaped and type(value) is str:
        # summarize() wrote lone surrogates as \udXXX; repr() doubled that
        # backslash. Undo it so the text reads as repr() of the original did.
        text = _ESCAPED_SURROGATE.sub(r"\\\1", text)
    if cut and type(value) in (str, bytes):
        text = text[:-1] + "..." + text[-1]   # inside the quotes: 'abc...'
    if kind == "bytearray" and type(value) is bytes:
        text = f"bytearray({text})"
    return text


def _render_container(summary: dict, kind: str, cut: bool, depth: int) -> str:
    opening, closing = _BRACKETS[kind]
    if summary.get("cycle") is True:
        return f"{opening}...{closing}"
    items = summary.get("items")
    items = items if type(items) is list else []
    if kind == "dict":
        parts = []
        for pair in items:
            if type(pair) is list and len(pair) == 2:
                parts.append(f"{_render(pair[0], depth + 1)}: {_render(pair[1], depth + 1)}")
            else:
                parts.append("<unrenderable item>")
    else:
        parts = [_render(item, depth + 1) for item in items]
    if cut:
        parts.append("...")
    if not parts and kind in ("set", "frozenset"):
        return f"{kind}()"
    if kind == "tuple" and len(parts) == 1 and not cut:
        return f"({parts[0]},)"
    return opening + ", ".join(parts) + closing


# --- validation of received summaries -----------------------------------

_OPTIONAL_KEYS = {"len": int, "trunc": bool, "esc": bool, "big": str, "special": str,
                  "r": str, "cycle": bool, "items": list}
_VERBATIM_TYPES = (type(None), bool, int, float, str, bytes)


def validate_summary(summary: Any, path: str = "summary") -> None:
    """Check a received summary's shape; raise InvalidMessage naming the bad key. Unknown keys are allowed."""
    _validate(summary, path, 0)


def _validate(summary: Any, path: str, depth: int) -> None:
    if type(summary) is not dict:
        raise InvalidMessage(path, f"expected a summary map, got {type_label(summary)}")
    if depth > MAX_SUMMARY_NESTING:
        raise InvalidMessage(path, f"summary nested deeper than {MAX_SUMMARY_NESTING} levels")
    if type(summary.get("t")) is not str:
        raise InvalidMessage(f"{path}.t", _missing_or_wrong(summary, "t", "str"))
    if type(summary.get("id")) is not int:
        raise InvalidMessage(f"{path}.id", _missing_or_wrong(summary, "id", "int"))
    if "v" in summary and type(summary["v"]) not in _VERBATIM_TYPES:
        raise InvalidMessage(f"{path}.v", f"expected a scalar, got {type_label(summary['v'])}")
    for key, expected in _OPTIONAL_KEYS.items():
        if key in summary and type(summary[key]) is not expected:
            raise InvalidMessage(f"{path}.{key}", f"expected {expected.__name__}, got {type_label(summary[key])}")
    items = summary.get("items")
    if items is None:
        return
    is_dict = summary["t"] == "dict"
    for index, item in enumerate(items):
        if is_dict:
            if type(item) is not list or len(item) != 2:
                raise InvalidMessage(f"{path}.items[{index}]", "expected a [key, value] pair of summaries")
            _validate(item[0], f"{path}.items[{index}][0]", depth + 1)
            _validate(item[1], f"{path}.items[{index}][1]", depth + 1)
        else:
            _validate(item, f"{path}.items[{index}]", depth + 1)


def _missing_or_wrong(summary: dict, key: str, expected: str) -> str:
    if key not in summary:
        return "missing required key"
    return f"expected {expected}, got {type_label(summary[key])}"
