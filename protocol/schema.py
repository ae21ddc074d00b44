"""Turn the message dataclasses' annotations into validating codecs.

The dataclasses in `messages.py` are the single source of truth for what a
message holds. `RecordSpec(cls)` reads their type hints once, at import, and
builds one codec per field. A codec checks a value and converts it:

- `decode(value, path)`: msgpack data -> Python field value (lists become the
  tuple of a version, maps become nested dataclasses, ints become floats where
  a float is declared). Raises `InvalidMessage` naming `path`.
- `encode(value, path)`: Python field value -> data msgpack can pack.
  Raises `UnencodableValue` naming `path`.

Supported annotations: int, float, str, bool, object (free-form plain data),
dict (a str-keyed map of plain data), list[X], tuple[int, int] (a protocol
version), X | None, Literal["a", "b"], nested dataclasses, and `list[list]`
for trace events (checked shallowly, see `_Events`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from .errors import InvalidMessage, UnencodableValue

INT_MIN = -(2**63)
UINT_MAX = 2**64 - 1          # msgpack carries -2**63 .. 2**64-1

MAX_NESTING = 64
"""Levels of lists/maps a free-form field (`object`, `dict`) may nest; deeper is rejected.

Bounds every recursive walk over received data, so hostile input cannot reach
Python's recursion limit. Summaries nest far less (see values.py)."""


def type_label(value: Any) -> str:
    """The type name used in error messages ("got int")."""
    if value is None:
        return "None"
    return type(value).__name__


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() of a received (plain) value, cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Bad(Exception):
    """Internal: a problem found deep inside a value; `keys` is the route to it, innermost first."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem
        self.keys: list[str] = []

    def path_from(self, path: str) -> str:
        return path + "".join(reversed(self.keys))


class Codec:
    """Checks and converts one field value; see the module docstring."""

    expected = "?"

    def decode(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def encode(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def _wrong(self, error: type[InvalidMessage], value: Any, path: str) -> InvalidMessage:
        return error(path, f"expected {self.expected}, got {type_label(value)}")


class _Int(Codec):
    expected = "int"

    def decode(self, value, path):
        if type(value) is int:
            return value
        raise self._wrong(InvalidMessage, value, path)

    def encode(self, value, path):
        if isinstance(value, int) and not isinstance(value, bool):
            if INT_MIN <= value <= UINT_MAX:
                return value
            raise UnencodableValue(path, f"int of {value.bit_length()} bits does not fit in 64 bits")
        raise self._wrong(UnencodableValue, value, path)


class _Float(Codec):
    expected = "float"

    def decode(self, value, path):
        # An int is a fine float (a sender may have written `score=1`).
        if type(value) is float or type(value) is int:
            return float(value)
        raise self._wrong(InvalidMessage, value, path)

    def encode(self, value, path):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and not INT_MIN <= value <= UINT_MAX:
                try:
                    return float(value)
                except OverflowError:
                    raise UnencodableValue(path, f"int of {value.bit_length()} bits is too large for a float") from None
            return value
        raise self._wrong(UnencodableValue, value, path)


class _Exact(Codec):
    """A str or bool: exactly that type on the wire; subclasses accepted when sending."""

    def __init__(self, kind: type):
        self.kind = kind
        self.expected = kind.__name__

    def decode(self, value, path):
        if type(value) is self.kind:
            return value
        raise self._wrong(InvalidMessage, value, path)

    def encode(self, value, path):
        if isinstance(value, self.kind):
            return value
        raise self._wrong(UnencodableValue, value, path)


class _Optional(Codec):
    def __init__(self, inner: Codec):
        self.inner = inner
        self.expected = f"{inner.expected} or None"

    def decode(self, value, path):
        if value is None:
            return None
        try:
            return self.inner.decode(value, path)
        except InvalidMessage as error:
            raise self._mention_none(error, value, path) from None

    def encode(self, value, path):
        if value is None:
            return None
        try:
            return self.inner.encode(value, path)
        except InvalidMessage as error:
            raise self._mention_none(error, value, path) from None

    def _mention_none(self, error: InvalidMessage, value: Any, path: str) -> InvalidMessage:
        # "expected float or None" when the value itself has the wrong type;
        # a problem deeper inside keeps its own path and text.
        if error.path == path and error.problem.startswith("expected "):
            return type(error)(path, f"expected {self.expected}, got {type_label(value)}")
        return error


class _Literal(Codec):
    def __init__(self, values: tuple[str, ...]):
        self.values = frozenset(values)
        self.expected = "one of " + ", ".join(repr(v) for v in values)

    def _check(self, value, path, error):
        if isinstance(value, str) and value in self.values:
            return str(value)
        if isinstance(value, str):
            raise error(path, f"expected {self.expected}, got {short_repr(value)}")
        raise self._wrong(error, value, path)

    def decode(self, value, path):
        return self._check(value, path, InvalidMessage)

    def encode(self, value, path):
        return self._check(value, path, UnencodableValue)


class _Version(Codec):
    """A protocol version (major, minor): a 2-item array on the wire, a tuple in Python."""

    expected = "[major, minor] (two ints)"

    def decode(self, value, path):
        if type(value) is list and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
            return (value[0], value[1])
        raise InvalidMessage(path, f"expected {self.expected}, got {short_repr(value)}")

    def encode(self, value, path):
        if (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= UINT_MAX for x in value)):
            return [value[0], value[1]]
        raise UnencodableValue(path, f"expected {self.expected}, got {short_repr(value)}")


class _List(Codec):
    def __init__(self, item: Codec):
        self.item = item
        self.expected = f"list of {item.expected}"

    def decode(self, value, path):
        if type(value) is not list:
            raise self._wrong(InvalidMessage, value, path)
        decode = self.item.decode
        return [decode(x, f"{path}[{i}]") for i, x in enumerate(value)]

    def encode(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise self._wrong(UnencodableValue, value, path)
        encode = self.item.encode
        return [encode(x, f"{path}[{i}]") for i, x in enumerate(value)]


class _Events(Codec):
    """`list[list]`: trace events. Checked shallowly (each item is an array) to keep batches cheap.

    The layout of each event is checked by `protocol.events.validate_event`,
    which the daemon calls on ingest. Decoding builds no object per event.
    """

    expected = "list of event arrays"

    def decode(self, value, path):
        if type(value) is not list:
            raise self._wrong(InvalidMessage, value, path)
        for event in value:
            if type(event) is not list:
                index = next(i for i, e in enumerate(value) if type(e) is not list)
                raise InvalidMessage(f"{path}[{index}]", f"expected an event array, got {type_label(event)}")
        return value

    def encode(self, value, path):
        if type(value) is not list and type(value) is not tuple:
            raise self._wrong(UnencodableValue, value, path)
        for event in value:
            if type(event) is not tuple and type(event) is not list:
                index = next(i for i, e in enumerate(value) if type(e) is not tuple and type(e) is not list)
                raise UnencodableValue(f"{path}[{index}]", f"expected an event tuple or list, got {type_label(event)}")
        return value


def _check_received_plain(value: Any, depth: int) -> None:
    """Check msgpack output nests at most MAX_NESTING deep and all map keys are str."""
    kind = type(value)
    if kind is list:
        if depth >= MAX_NESTING:
            raise _Bad(f"nested deeper than {MAX_NESTING} levels")
        for index, item in enumerate(value):
            if type(item) is list or type(item) is dict:
                try:
                    _check_received_plain(item, depth + 1)
                except _Bad as bad:
                    bad.keys.append(f"[{index}]")
                    raise
    elif kind is dict:
        if depth >= MAX_NESTING:
            raise _Bad(f"nested deeper than {MAX_NESTING} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise _Bad(f"map keys must be str, got {type_label(key)} key {short_repr(key)}")
            if type(item) is list or type(item) is dict:
                try:
                    _check_received_plain(item, depth + 1)
                except _Bad as bad:
                    bad.keys.append(f"[{key!r}]")
                    raise


def _check_sendable_plain(value: Any, depth: int) -> None:
    """Check a Python value is plain data msgpack carries and the other side accepts."""
    if isinstance(value, (list, tuple)):
        if depth >= MAX_NESTING:
            raise _Bad(f"nested deeper than {MAX_NESTING} levels (or contains itself)")
        for index, item in enumerate(value):
            try:
                _check_sendable_plain(item, depth + 1)
            except _Bad as bad:
                bad.keys.append(f"[{index}]")
                raise
    elif isinstance(value, dict):
        if depth >= MAX_NESTING:
            raise _Bad(f"nested deeper than {MAX_NESTING} levels (or contains itself)")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad(f"map keys must be str, got {type_label(key)} key {short_repr(key)}")
            try:
                _check_sendable_plain(item, depth + 1)
            except _Bad as bad:
                bad.keys.append(f"[{key!r}]")
                raise
    elif isinstance(value, bool) or value is None or isinstance(value, (float, str, bytes)):
        return
    elif isinstance(value, int):
        if not INT_MIN <= value <= UINT_MAX:
            raise _Bad(f"int of {value.bit_length()} bits does not fit in 64 bits")
    else:
        raise _Bad(
            f"{type_label(value)} is not plain data (use None, bool, int, float, str, bytes, "
            f"lists and str-keyed dicts)"
        )


class _Plain(Codec):
    """Free-form plain data (`object`), or a str-keyed map of it (`dict`)."""

    def __init__(self, map_only: bool):
        self.map_only = map_only
        self.expected = "map" if map_only else "plain data"

    def decode(self, value, path):
        if self.map_only and type(value) is not dict:
            raise self._wrong(InvalidMessage, value, path)
        try:
            _check_received_plain(value, 0)
        except _Bad as bad:
            raise InvalidMessage(bad.path_from(path), bad.problem) from None
        return value

    def encode(self, value, path):
        if self.map_only and not isinstance(value, dict):
            raise self._wrong(UnencodableValue, value, path)
        try:
            _check_sendable_plain(value, 0)
        except _Bad as bad:
            raise UnencodableValue(bad.path_from(path), bad.problem) from None
        return value


class _Record(Codec):
    """A nested dataclass, a map on the wire."""

    def __init__(self, cls: type):
        self.cls = cls
        self.expected = f"{cls.__name__} map"
        self._spec: RecordSpec | None = None

    @property
    def spec(self) -> RecordSpec:
        if self._spec is None:
            self._spec = spec_of(self.cls)
        return self._spec

    def decode(self, value, path):
        if type(value) is not dict:
            raise self._wrong(InvalidMessage, value, path)
        return self.spec.decode(value, path)

    def encode(self, value, path):
        if not isinstance(value, self.cls):
            raise UnencodableValue(path, f"expected {self.cls.__name__}, got {type_label(value)}")
        return self.spec.encode(value, path)


def codec_for(annotation: Any) -> Codec:
    """The codec for one (evaluated) field annotation; TypeError for an unsupported one."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is int:
        return _Int()
    if annotation is float:
        return _Float()
    if annotation in (str, bool):
        return _Exact(annotation)
    if annotation is object or annotation is Any:
        return _Plain(map_only=False)
    if annotation is dict or origin is dict:
        return _Plain(map_only=True)
    if origin is Literal:
        return _Literal(args)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _Optional(codec_for(rest[0]))
    if origin is tuple and args == (int, int):
        return _Version()
    if origin is list and len(args) == 1:
        if args[0] is list:
            return _Events()
        return _List(codec_for(args[0]))
    if dataclasses.is_dataclass(annotation):
        return _Record(annotation)
    raise TypeError(f"protocol.schema: no codec for field type {annotation!r}")


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str
    codec: Codec
    required: bool


class RecordSpec:
    """The codecs for every field of one dataclass, in declaration order."""

    def __init__(self, cls: type):
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.fields = tuple(
            FieldSpec(
                f.name,
                codec_for(hints[f.name]),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        )

    def decode(self, data: dict, path: str) -> Any:
        """Build the dataclass from a received map. Unknown keys are ignored (newer minor versions)."""
        values = {}
        for field in self.fields:
            if field.name in data:
                values[field.name] = field.codec.decode(data[field.name], f"{path}.{field.name}")
            elif field.required:
                raise InvalidMessage(f"{path}.{field.name}", "missing required field")
        return self.cls(**values)

    def encode(self, record: Any, path: str) -> dict:
        """The map to send for `record`, every field checked."""
        return {
            field.name: field.codec.encode(getattr(record, field.name), f"{path}.{field.name}")
            for field in self.fields
        }


_SPECS: dict[type, RecordSpec] = {}


def spec_of(cls: type) -> RecordSpec:
    """The (cached) RecordSpec of a dataclass."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = RecordSpec(cls)
    return spec

