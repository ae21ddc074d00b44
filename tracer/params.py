"""Parameters: values the optimizer may change, and every place they are stored.

    PROMPT = tracer.param("You are terse.")            # module global
    class Agent:
        temperature = tracer.param(0.7)                 # class attribute
        def __init__(self):
            self.style = tracer.param("formal")         # attribute of every instance
    def answer(q, retries=tracer.param(2)): ...         # default argument
    def make_agent():
        prompt = tracer.param("Be brief.")              # closure variable
        return lambda q: f"{prompt} {q}"
    FIRST = SECOND = tracer.param("text")              # chained: both names

`param(value)` returns the plain value and records where it is stored. The
place is read from the caller's bytecode at the call site: a symbolic run of
the straight-line code after the call finds the instructions that consume
its result (`STORE_NAME`, `STORE_GLOBAL`, `STORE_ATTR` on a plainly loaded
object, `STORE_DEREF` of the caller's own cell, or a default tuple/dict
handed to `MAKE_FUNCTION`), seeing through the rewriter's `__@trace_*`
hooks. A chained assignment stores copies one after the other: every target
is a place of the one parameter, named after the first. That is exact,
never a guess by value equality or identity (a copy the program takes later,
`before = FIRST`, is its own). A result
consumed any other way (a local variable, an argument, an expression) makes a
parameter of kind ``value``: it lives only here, and every later `param()`
call at that place returns its current value, so a patch still takes effect
the next time the code runs.

A closure variable is a parameter of kind ``value`` too (named like a
local), and a set also reaches the cell of every live function nested in
that function that reads it (`_CellLocation`); the rewriter records its
reads through `registry.by_closure`. A `nonlocal` store to an outer
function's cell stays a plain ``value``.

Default names, stable across processes and runs (the daemon keys a session's
parameters by name):

- module global: ``module.NAME``; for ``__main__`` the module is the script's
  file stem (or the `-m` module name), so ``app.py`` gives ``app.PROMPT``
- class attribute: ``Class.attr`` (class qualname); instance attribute set
  in a method: ``Class.attr`` with the method's class, one parameter for every
  instance
- default argument: ``func.arg`` (function qualname, e.g. ``Agent.run.retries``)
- in all of these ``.<locals>.`` of a nested qualname reads ``.``
  (``make.inner.x``)
- a local variable: ``func.var``; anything else ``func@LINE``
- trainable marked function (kind ``source``): ``module.qualname``, with the
  module named as for globals (``app.answer``, ``app.Agent.run``)

Two places that derive the same name are one parameter (setting it sets
both); pass `name=` to tell them apart.

`ParamRecord.where` (sent as `ParamDef.where`) reads
``"<kind> <module __name__>:<target> @ <file>:<line>"``, e.g.
``"default app:Agent.run.retries @ /src/app.py:14"``; the export parses it
(`optimizer_service.export.parse_where`). For kind "source" it is
``"<module __name__>:<qualname>"``, the key of the function's FunctionDef.

Identity: CPython shares some equal objects (small ints, interned strings),
which would make identity-based provenance ambiguous. `param` returns an
equal, unshared copy of str, bytes (2+ items), int outside [-5, 256], float,
complex, non-empty tuple and frozenset. It cannot unshare None, bools, ints in
[-5, 256], empty str/bytes/tuple/frozenset and one-character str/bytes;
those are returned as they are.

Mutable values (lists, dicts, objects) are never shared between places: each
place a patch writes to gets its own deep copy, as each instance had its own
list before.
"""
from __future__ import annotations

import copy
import dis
import gc
import importlib
import os
import sys
import threading
import weakref
from dataclasses import dataclass, replace
from types import CodeType, FrameType, FunctionType, ModuleType
from typing import Any, Callable

from tracer import ids

__all__ = [
    "param",
    "register_config_param",
    "registry",
    "ParamRecord",
    "ParamRegistry",
    "ParamTypeError",
    "ConfigParamError",
    "unshared_copy",
    "coerce_value",
    "stable_module_name",
    "register_source_param",
]

PY = sys.version_info[:2]

KIND_GLOBAL = "global"
KIND_CLASS_ATTR = "class_attr"
KIND_INSTANCE_ATTR = "instance_attr"
KIND_DEFAULT = "default"
KIND_SOURCE = "source"
KIND_VALUE = "value"


class ParamTypeError(ValueError):
    """A new value does not fit the parameter's type; the message says what was expected."""


class ConfigParamError(ValueError):
    """A parameter named by configuration (`MOD:NAME`, `MOD:Class.attr`) does not exist."""


# -- values ------------------------------------------------------------------

_SMALL_INTS = range(-5, 257)
_IMMUTABLE_SCALARS = (str, bytes, int, float, complex, bool, type(None))


def unshared_copy(value: Any) -> Any:
    """An equal object that CPython does not share with anything else, when one can exist.

    Returns `value` itself for types that are never shared (lists, objects)
    and for the values CPython always shares (see the module docstring).
    """
    kind = type(value)
    if kind is str or kind is bytes:
        return value[:1] + value[1:] if len(value) >= 2 else value
    if kind is int:
        return value if value in _SMALL_INTS else (value + 1) - 1
    if kind is float:
        return value * 1.0  # arithmetic always allocates; keeps -0.0, inf and nan
    if kind is complex:
        return complex(value.real * 1.0, value.imag * 1.0)
    if kind is tuple:
        return tuple(list(value)) if value else value
    if kind is frozenset:
        return frozenset(list(value)) if value else value
    return value


def _is_immutable(value: Any) -> bool:
    if isinstance(value, _IMMUTABLE_SCALARS):
        return True
    if type(value) in (tuple, frozenset):
        return all(_is_immutable(item) for item in value)
    return False


def _fresh(value: Any) -> Any:
    """What to store at one more place: the object itself if immutable, else a deep copy."""
    return value if _is_immutable(value) else copy.deepcopy(value)


def coerce_value(current: Any, new: Any, *, name: str) -> Any:
    """`new` converted to the type of `current`, or `ParamTypeError` saying why not.

    Wire values arrive as msgpack data, so a list is accepted for a tuple
    parameter, an int for a float one and an integral float for an int one.
    A parameter whose current value is None accepts anything.
    """
    expected = type(current)
    if current is None or type(new) is expected:
        return new
    if expected is bool or type(new) is bool:
        raise ParamTypeError(f"parameter {name!r} is a {expected.__name__}; got {type(new).__name__} {new!r:.80}")
    if expected is float and type(new) is int:
        return float(new)
    if expected is int and type(new) is float and new.is_integer():
        return int(new)
    if expected is tuple and type(new) is list:
        return tuple(new)
    if expected is bytes and type(new) is str:
        raise ParamTypeError(f"parameter {name!r} is bytes; got str {new!r:.80} (send bytes)")
    if isinstance(new, expected) and expected in (str, int, float, list, dict):
        return new
    raise ParamTypeError(
        f"parameter {name!r} is a {expected.__name__}; got {type(new).__name__} {new!r:.80}"
    )


def _wire_value(value: Any, depth: int = 0) -> Any:
    """The value as msgpack-native data (repr text for anything else)."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        if type(value) is int and not -(2**63) <= value < 2**64:
            return str(value)
        return value
    if depth < 20 and type(value) in (list, tuple):
        return [_wire_value(item, depth + 1) for item in value]
    if depth < 20 and type(value) is dict and all(type(k) is str for k in value):
        return {k: _wire_value(v, depth + 1) for k, v in value.items()}
    try:
        text = repr(value)
    except Exception as exc:  # a user __repr__ may fail
        text = f"<repr failed: {type(exc).__name__}>"
    return text[:2000]


def stable_module_name(namespace: dict) -> str:
    """The name a module's parameters are prefixed with: `__name__`, except for `__main__`.

    A script run as `__main__` is named by its `-m` module name or its file
    stem, so names stay the same whether it runs as a script or is imported.
    """
    name = namespace.get("__name__") or "__main__"
    # A multiprocessing spawn child runs the parent's script as __mp_main__:
    # its parameters must have the parent's names to be the same parameters.
    if name not in ("__main__", "__mp_main__"):
        return name
    spec = namespace.get("__spec__")
    if spec is not None and getattr(spec, "name", None) and spec.name != "__main__":
        return spec.name
    path = namespace.get("__file__")
    if path:
        return os.path.splitext(os.path.basename(path))[0]
    return name


# -- places a parameter is stored ---------------------------------------------


class _Location:
    """One place a parameter's value lives. `read` raises LookupError when it is gone."""

    kind: str = KIND_VALUE

    def alive(self) -> bool:
        return True

    def read(self) -> Any:
        raise LookupError("no stored value")

    def write(self, value: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def same_place(self, other: "_Location") -> bool:
        return False


class _GlobalLocation(_Location):
    kind = KIND_GLOBAL

    def __init__(self, namespace: dict, name: str):
        self.namespace = namespace  # the module's dict itself: works for __main__ too
        self.name = name

    def read(self) -> Any:
        try:
            return self.namespace[self.name]
        except KeyError:
            raise LookupError(f"global {self.name!r} is not assigned") from None

    def write(self, value: Any) -> None:
        self.namespace[self.name] = value

    def same_place(self, other: _Location) -> bool:
        return isinstance(other, _GlobalLocation) and other.namespace is self.namespace and other.name == self.name


class _ClassAttrLocation(_Location):
    """A class attribute; the class may not exist yet when `param` runs (class body)."""

    kind = KIND_CLASS_ATTR

    def __init__(self, namespace: dict, class_qualname: str, attr: str, cls: type | None = None):
        self.namespace = namespace
        self.class_qualname = class_qualname
        self.attr = attr
        self.marker: Any = None  # the object param() returned, to find a <locals> class by identity
        self._cls = weakref.ref(cls) if cls is not None else None

    def cls(self) -> type | None:
        found = self._cls() if self._cls is not None else None
        if found is None:
            found = _resolve_qualname(self.namespace, self.class_qualname)
            if not isinstance(found, type):
                found = _class_holding(self.attr, self.marker)
            if isinstance(found, type):
                self._cls = weakref.ref(found)
        return found if isinstance(found, type) else None

    def alive(self) -> bool:
        return self._cls is None or self._cls() is not None

    def read(self) -> Any:
        cls = self.cls()
        if cls is None or self.attr not in cls.__dict__:
            raise LookupError(f"class attribute {self.class_qualname}.{self.attr} not found")
        return cls.__dict__[self.attr]

    def write(self, value: Any) -> None:
        cls = self.cls()
        if cls is None:
            raise LookupError(f"class {self.class_qualname} not found; cannot set {self.attr!r}")
        setattr(cls, self.attr, value)

    def same_place(self, other: _Location) -> bool:
        return (
            isinstance(other, _ClassAttrLocation) and other.namespace is self.namespace
            and other.class_qualname == self.class_qualname and other.attr == self.attr
        )


class _InstanceAttrLocation(_Location):
    """The attribute of one instance, held weakly so tracing never keeps it alive."""

    kind = KIND_INSTANCE_ATTR

    def __init__(self, instance: Any, attr: str, given: Any, on_death: Callable[[Any], None] | None = None):
        self.ref = weakref.ref(instance, on_death)
        self.attr = attr
        self.given = given  # what we put there; a different object means the program overwrote it

    def alive(self) -> bool:
        return self.ref() is not None

    def read(self) -> Any:
        instance = self.ref()
        if instance is None:
            raise LookupError("instance is gone")
        return getattr(instance, self.attr)

    def write(self, value: Any) -> None:
        instance = self.ref()
        if instance is None:
            return
        if getattr(instance, self.attr, _MISSING) is not self.given:
            return  # the program assigned its own value since: leave it alone
        setattr(instance, self.attr, value)
        self.given = value

    def same_place(self, other: _Location) -> bool:
        return isinstance(other, _InstanceAttrLocation) and other.ref() is self.ref() and other.attr == self.attr


class _UnreferenceableInstancesLocation(_Location):
    """Instances that refuse weak references (`__slots__` without `__weakref__`).

    They are found when a patch comes, through `gc.get_referrers` of the value
    they hold, so only unshared values can be patched on them.
    """

    kind = KIND_INSTANCE_ATTR

    def __init__(self, cls: type, attr: str, given: Any):
        self.cls = cls.__qualname__
        self.attr = attr
        self.given = given

    def read(self) -> Any:
        raise LookupError("instances are not tracked")

    def write(self, value: Any) -> None:
        old = self.given
        if not _identity_is_meaningful(old):
            return  # a shared object (None, small int): identity would find strangers
        for holder in gc.get_referrers(old):
            # The type test first: it runs no user code on strangers among the referrers.
            if type(holder).__qualname__ == self.cls and getattr(holder, self.attr, _MISSING) is old:
                setattr(holder, self.attr, value)
        self.given = value

    def same_place(self, other: _Location) -> bool:
        return isinstance(other, _UnreferenceableInstancesLocation) and other.cls == self.cls and other.attr == self.attr


class _DefaultLocation(_Location):
    """A default argument of every function made from one `def` statement."""

    kind = KIND_DEFAULT

    def __init__(self, namespace: dict, func_qualname: str, code: CodeType, arg: str, keyword_only: bool):
        self.namespace = namespace
        self.func_qualname = func_qualname
        self.code = code
        self.arg = arg
        self.keyword_only = keyword_only
        self._functions: "weakref.WeakSet[FunctionType]" = weakref.WeakSet()
        self.stale = True  # a new function may have been made since the last look

    def functions(self) -> list[FunctionType]:
        if self.stale:
            self._find_functions()
        return [f for f in self._functions if self._has_slot(f)]

    def _find_functions(self) -> None:
        found = _resolve_qualname(self.namespace, self.func_qualname)
        found = getattr(found, "__func__", found)
        while found is not None and not isinstance(found, FunctionType):
            found = getattr(found, "__wrapped__", None)
        if isinstance(found, FunctionType):
            self._functions.add(found)
        if "<locals>" in self.func_qualname or not self._functions:
            for holder in gc.get_referrers(self.code):
                if isinstance(holder, FunctionType) and holder.__code__ is self.code:
                    self._functions.add(holder)
        self.stale = False

    def _has_slot(self, func: FunctionType) -> bool:
        if self.keyword_only:
            return bool(func.__kwdefaults__) and self.arg in func.__kwdefaults__
        return self._index(func) is not None

    def _index(self, func: FunctionType) -> int | None:
        code = func.__code__
        names = code.co_varnames[: code.co_argcount]
        defaults = func.__defaults__ or ()
        if self.arg not in names:
            return None
        index = names.index(self.arg) - (len(names) - len(defaults))
        return index if 0 <= index < len(defaults) else None

    def alive(self) -> bool:
        return True  # functions are held weakly; finding them (gc) waits until a read or write

    def read(self) -> Any:
        for func in self.functions():
            if self.keyword_only:
                return func.__kwdefaults__[self.arg]
            return func.__defaults__[self._index(func)]  # type: ignore[index]
        raise LookupError(f"function {self.func_qualname} not found")

    def write(self, value: Any) -> None:
        functions = self.functions()
        if not functions:
            raise LookupError(f"function {self.func_qualname} not found; cannot set default {self.arg!r}")
        for func in functions:
            if self.keyword_only:
                func.__kwdefaults__ = {**func.__kwdefaults__, self.arg: _fresh(value)}
            else:
                index = self._index(func)
                defaults = list(func.__defaults__)  # type: ignore[arg-type]
                defaults[index] = _fresh(value)  # type: ignore[index]
                func.__defaults__ = tuple(defaults)

    def same_place(self, other: _Location) -> bool:
        return isinstance(other, _DefaultLocation) and other.code is self.code and other.arg == self.arg


class _CellLocation(_Location):
    """A variable of an enclosing function that the functions nested in it read (a closure variable).

        def make_agent():
            prompt = tracer.param("Be brief.")      # a cell of make_agent's frame
            def answer(q): return f"{prompt} {q}"  # reads it as a free variable
            return answer

    Every run of the enclosing function has its own cell. A write sets the
    cell of every live function that reads the variable, made by any run,
    at any depth of nesting, found when the write happens (through the
    module namespace their `__globals__` hold), but only while the cell
    still holds what `param()` or the last write put there: a value the
    program assigned itself (`nonlocal prompt; prompt = ...`) is left alone.
    A run that made no closure yet has only its frame's cell, which no
    write reaches; its next `param()` returns the set value.

    `readers` are the qualnames of the code that reads this very variable
    (the enclosing function and its nested code that has it as a free
    variable, by Python's scoping rules): the rewriter's read hooks look
    the parameter up by (module, reader qualname, variable).
    """

    kind = KIND_VALUE

    def __init__(self, namespace: dict, owner_code: CodeType, owner_qualname: str, var: str):
        self.namespace = namespace
        self.owner_qualname = owner_qualname
        self.var = var
        self.readers = _closure_readers(owner_code, owner_qualname, var)
        self._declared: Any = _MISSING           # what param() returned last, the value of new cells
        self._written: dict[int, Any] = {}       # id(cell) -> what the last write put into it
        # The cells `snapshot` found, for the write that follows it in `ParamRecord.set`
        # (finding them walks the whole heap: once per set, not twice).
        self._snapshot_cells: list | None = None

    def is_variable(self, namespace: dict, owner_qualname: str, var: str) -> bool:
        return namespace is self.namespace and owner_qualname == self.owner_qualname and var == self.var

    def declared(self, value: Any) -> None:
        self._declared = value

    def read(self) -> Any:
        raise LookupError("a closure variable has one cell per run of its function")

    def cells(self) -> list:
        """The cells of this variable held by live functions, each once, whoever filled them."""
        found: dict[int, Any] = {}
        for holder in gc.get_referrers(self.namespace):
            if type(holder) is not FunctionType or holder.__globals__ is not self.namespace:
                continue
            if holder.__qualname__ not in self.readers:
                continue
            freevars = holder.__code__.co_freevars
            if self.var in freevars and holder.__closure__ is not None:
                cell = holder.__closure__[freevars.index(self.var)]
                found[id(cell)] = cell
        return list(found.values())

    def _ours(self, cell: Any) -> bool:
        try:
            held = cell.cell_contents
        except ValueError:  # empty: the variable is not assigned (yet)
            return False
        return held is self._declared or held is self._written.get(id(cell), _MISSING)

    def _siblings(self) -> list["_CellLocation"]:
        """The locations of the other parameters declared at this same variable."""
        key = (self.namespace.get("__name__", ""), self.owner_qualname, self.var)
        return [loc for record in registry.by_closure.get(key, ()) for loc in record.locations
                if isinstance(loc, _CellLocation) and loc is not self and loc.same_place(self)]

    def write(self, value: Any) -> None:
        cells, self._snapshot_cells = self._snapshot_cells, None
        siblings = self._siblings()
        written = {}
        for cell in cells if cells is not None else self.cells():
            # A shared object (3, None) held by the cell of another parameter
            # of this variable too cannot say whose cell it is: left alone.
            if self._ours(cell) and not any(other._ours(cell) for other in siblings):
                cell.cell_contents = written[id(cell)] = _fresh(value)
        self._written = written
        if self._declared is not _MISSING:
            # The next run's param() returns the set value: its cell must count as ours.
            self._declared = value

    def snapshot(self) -> Callable[[], None]:
        """An undo of the next write: every cell and the location's memory as they are now."""
        saved = []
        self._snapshot_cells = self.cells()
        for cell in self._snapshot_cells:
            try:
                saved.append((cell, cell.cell_contents))
            except ValueError:
                continue
        declared, written = self._declared, dict(self._written)

        def restore() -> None:
            for cell, held in saved:
                cell.cell_contents = held
            self._declared, self._written = declared, written
        return restore

    def same_place(self, other: _Location) -> bool:
        return isinstance(other, _CellLocation) and other.is_variable(self.namespace, self.owner_qualname, self.var)


_CO_OPTIMIZED = 0x0001  # a function's code (not a class body or module)


def _closure_readers(code: CodeType, qualname: str, var: str) -> frozenset[str]:
    """Qualnames of `code` (which holds `var` in a cell) and of the code nested in it that reads that cell.

    A nested code object reads it when `var` is one of its free variables;
    its own nested code does too, through it. Code that binds a `var` of
    its own (a cell or local of its own) hides the outer one from its inner code.
    """
    readers = {qualname}

    def walk(parent: CodeType, parent_qualname: str) -> None:
        scope = ".<locals>." if parent.co_flags & _CO_OPTIMIZED else "."
        for const in parent.co_consts:
            if isinstance(const, CodeType) and var in const.co_freevars:
                # 3.10 code objects have no co_qualname: derive it as the compiler does
                child = getattr(const, "co_qualname", None) or f"{parent_qualname}{scope}{const.co_name}"
                readers.add(child)
                walk(const, child)

    walk(code, qualname)
    return frozenset(readers)


class _SourceLocation(_Location):
    """The code of a trainable marked function; writes go through the patcher."""

    kind = KIND_SOURCE

    def __init__(self, func: FunctionType):
        self.ref = weakref.ref(func)

    def alive(self) -> bool:
        return self.ref() is not None

    def same_place(self, other: _Location) -> bool:
        return isinstance(other, _SourceLocation) and other.ref() is self.ref()


_MISSING = object()


def _identity_is_meaningful(value: Any) -> bool:
    """True unless `value` is an object CPython may share with equal strangers (None, 7, 'a')."""
    return not _is_immutable(value) or unshared_copy(value) is not value


def _resolve_qualname(namespace: dict, qualname: str) -> Any:
    """The object a dotted qualname names in a module namespace, or None (`<locals>` never resolves)."""
    if "<locals>" in qualname:
        return None
    parts = qualname.split(".")
    current: Any = namespace.get(parts[0])
    for part in parts[1:]:
        if current is None:
            return None
        current = getattr(current, "__dict__", {}).get(part)
    return current


def _class_holding(attr: str, value: Any) -> type | None:
    """The class whose own attribute `attr` is this very object (never by equality)."""
    if not _identity_is_meaningful(value):
        return None  # shared object: identity cannot tell whose it is
    for holder in gc.get_referrers(value):
        if type(holder) is dict and holder.get(attr) is value:
            for owner in gc.get_referrers(holder):
                if isinstance(owner, type) and owner.__dict__.get(attr) is value:
                    return owner
    return None


# -- records and the registry ---------------------------------------------------


class ParamRecord:
    """One parameter: its name, kind, current value, and every place it is stored."""

    def __init__(self, name: str, kind: str, value: Any, *, constraint: str | None = None,
                 trainable: bool = True, where: str = "", file: str | None = None, line: int | None = None,
                 module: str | None = None, target: str | None = None):
        self.name = name
        self.kind = kind
        self.value = value
        self.initial = value
        self.type = "code" if kind == KIND_SOURCE else type(value).__name__
        self.constraint = constraint
        self.trainable = trainable
        self.where = where
        self.file = file
        self.line = line
        self.module = module
        self.target = target  # NAME, Class.attr, func.arg, or the function qualname
        self.version = 0      # the patch version that last set it (0: as declared)
        self.patched = False  # set() ran: later declarations return the set value
        self.locations: list[_Location] = []
        # Instance attributes: (id(instance), attr) -> its location (two
        # attributes of one instance with `self.a = self.b = param(...)`). A
        # dict, so that declaring on the 100,000th instance costs what it did
        # on the first; an entry leaves when its instance dies (weak reference callback).
        self.instances: dict[tuple[int, str], _InstanceAttrLocation] = {}
        # For kind "source": what a new body must keep (see protocol.source_rules).
        self.func_id: int | None = None
        self.signature: str | None = None
        self.freevars: list[str] = []

    def __repr__(self) -> str:
        return f"<ParamRecord {self.name!r} kind={self.kind} type={self.type} version={self.version}>"

    def function(self) -> FunctionType | None:
        """For kind "source": the live function object, or None if it is gone."""
        for location in self.locations:
            if isinstance(location, _SourceLocation):
                return location.ref()
        return None

    def get(self) -> Any:
        """The current value (for kind "source": the current source text)."""
        if self.kind not in (KIND_INSTANCE_ATTR, KIND_VALUE, KIND_SOURCE):
            for location in self.locations:
                try:
                    return location.read()
                except LookupError:
                    continue
        return self.value

    def set(self, value: Any, *, version: int | None = None) -> None:
        """Store `value` everywhere the parameter lives; all places or none.

        The value is checked against the parameter's type first
        (`ParamTypeError`). For kind "source", `value` is new function source
        and the patcher compiles and swaps it (`tracer.patcher.PatchRejected`).
        If writing one place fails, the places already written get their old
        value back and the error is raised.
        """
        if self.kind == KIND_SOURCE:
            from tracer import patcher  # the patcher imports this module
            patcher.replace_source(self, value, version=version)
            return
        with registry.lock:
            new = coerce_value(self.value, value, name=self.name)
            new = unshared_copy(new)
            self.locations = [loc for loc in self.locations if loc.alive()]
            live = self.locations + list(self.instances.values())
            undo: list[Callable[[], None]] = []
            try:
                for location in live:
                    undo.append(_undo_for(location))
                    location.write(_fresh(new))
                for alias_namespace, alias_name in self._aliases():
                    previous = alias_namespace[alias_name]
                    undo.append(lambda ns=alias_namespace, n=alias_name, p=previous: ns.__setitem__(n, p))
                    alias_namespace[alias_name] = new
            except BaseException:
                for restore in reversed(undo):
                    try:
                        restore()
                    except Exception:
                        pass  # best effort: the first error is the one to report
                raise
            self.value = new
            self.patched = True
            if version is not None:
                self.version = version
            registry.generation += 1

    def _aliases(self) -> list[tuple[dict, str]]:
        """Other modules' globals that are `from config import PROMPT` copies of this parameter.

        Only globals of the parameter's own name, bound to this very object,
        and only when the value is unshared (so identity cannot pick up an
        equal stranger). A copy under another name (`before = config.PROMPT`)
        is the program's own snapshot: changing it would change what the
        program does, so it is left alone.
        """
        if self.kind not in (KIND_GLOBAL, KIND_CLASS_ATTR):
            return []
        current = self.value
        if not _identity_is_meaningful(current):
            return []
        own = {(id(loc.namespace), loc.name) for loc in self.locations if isinstance(loc, _GlobalLocation)}
        names = {loc.name for loc in self.locations if isinstance(loc, _GlobalLocation)}
        names |= {loc.attr for loc in self.locations if isinstance(loc, _ClassAttrLocation)}
        namespaces = {id(loc.namespace): loc.namespace for loc in self.locations if isinstance(loc, _GlobalLocation)}
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            if type(namespace) is dict:
                namespaces.setdefault(id(namespace), namespace)  # __main__ may not be sys.modules' one
        found = []
        for namespace in namespaces.values():
            for key, bound in list(namespace.items()):
                if key in names and bound is current and (id(namespace), key) not in own:
                    found.append((namespace, key))
        return found

    def definition(self):
        """This parameter as a protocol `ParamDef`."""
        from protocol.messages import ParamDef

        return ParamDef(
            name=self.name, type=self.type, value=_wire_value(self.get()), constraint=self.constraint,
            kind=self.kind, where=self.where, trainable=self.trainable,
        )


def _undo_for(location: _Location) -> Callable[[], None]:
    if isinstance(location, _InstanceAttrLocation):
        given, instance = location.given, location.ref()

        def restore_instance() -> None:
            if instance is not None and getattr(instance, location.attr, _MISSING) is location.given:
                setattr(instance, location.attr, given)
            location.given = given
        return restore_instance
    if isinstance(location, _CellLocation):
        return location.snapshot()
    if isinstance(location, _DefaultLocation):
        saved = [(f, f.__defaults__, f.__kwdefaults__) for f in location.functions()]

        def restore_defaults() -> None:
            for func, defaults, kwdefaults in saved:
                func.__defaults__, func.__kwdefaults__ = defaults, kwdefaults
        return restore_defaults
    try:
        previous = location.read()
    except LookupError:
        return lambda: None
    return lambda: location.write(previous)


class ParamRegistry:
    """Every parameter of this process, by name, with the lookups the rewriter uses.

    - `by_global[(module __name__, global name)]`
    - `by_attr[attr name]` -> list of records (class and instance attributes)
    - `by_default[(function id, arg name)]` (`tracer.ids.function_id`)
    - `by_closure[(module __name__, reader qualname, variable)]` -> list of
      records: a variable of an enclosing function, keyed as each function
      that reads it (`LOAD_DEREF`) sees it; several records when runs of the
      function declare different parameters there (`name=f"{role}.prompt"`)
    - `generation`: bumped on every change, for caches

    Trainable marked functions (the marking registry) appear as records of
    kind "source"; `records()` picks up newly marked ones.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.generation = 0
        self.by_name: dict[str, ParamRecord] = {}
        self.by_global: dict[tuple[str, str], ParamRecord] = {}
        self.by_attr: dict[str, list[ParamRecord]] = {}
        self.by_default: dict[tuple[int, str], ParamRecord] = {}
        # (module __name__, qualname of the reading function, variable): a closure
        # variable as the function that reads it sees it (see _CellLocation).
        self.by_closure: dict[tuple[str, str, str], list[ParamRecord]] = {}
        # Patch values for parameters this process has not declared yet
        # (a module imported later): name -> (version, value).
        self.deferred: dict[str, tuple[int, Any]] = {}
        # The same for new source of trainable functions not defined yet:
        # name -> (version, source); swapped in when the function is registered.
        self.deferred_sources: dict[str, tuple[int, str]] = {}
        # Deferred sources that did not fit the function defined here: name -> reason.
        self.deferred_source_errors: dict[str, str] = {}
        self._source_funcs: dict[int, ParamRecord] = {}

    def get(self, name: str) -> ParamRecord | None:
        """The record named `name` (marked functions included), or None."""
        with self.lock:
            record = self.by_name.get(name)
            if record is None:
                self._sync_marked_functions()
                record = self.by_name.get(name)
            return record

    def records(self) -> list[ParamRecord]:
        """All parameters, in the order they were declared."""
        with self.lock:
            self._sync_marked_functions()
            return list(self.by_name.values())

    def definitions(self) -> list:
        """`ParamDef`s of every trainable-or-not parameter, for a Definitions message."""
        return [record.definition() for record in self.records()]

    def _add_location(self, record: ParamRecord, location: _Location) -> _Location:
        """Add `location` to `record` unless it has that place already; returns the location kept."""
        if isinstance(location, _InstanceAttrLocation):
            instance = location.ref()
            if instance is not None:
                record.instances[(id(instance), location.attr)] = location
            self._index_attr(record, location.attr)
            return location
        for known in record.locations:
            if known.same_place(location):
                return known
        record.locations = [loc for loc in record.locations if loc.alive()]
        record.locations.append(location)
        if isinstance(location, _GlobalLocation):
            self.by_global[(location.namespace.get("__name__", ""), location.name)] = record
        elif isinstance(location, (_ClassAttrLocation, _UnreferenceableInstancesLocation)):
            self._index_attr(record, location.attr)
        elif isinstance(location, _DefaultLocation):
            module = location.namespace.get("__name__", "")
            self.by_default[(ids.function_id(module, location.func_qualname), location.arg)] = record
        elif isinstance(location, _CellLocation):
            module = location.namespace.get("__name__", "")
            for reader in location.readers:
                bucket = self.by_closure.setdefault((module, reader, location.var), [])
                if record not in bucket:
                    bucket.append(record)
        self.generation += 1
        return location

    def _index_attr(self, record: ParamRecord, attr: str) -> None:
        bucket = self.by_attr.setdefault(attr, [])
        if record not in bucket:
            bucket.append(record)
            self.generation += 1

    def _sync_marked_functions(self) -> None:
        marking = _marking()
        if marking is None:
            return
        entries = getattr(marking, "registry", None)
        if entries is None:
            return
        for func_id, entry in list(entries.items()):  # marking.registry: func id -> MarkedFunction
            if func_id in self._source_funcs or not entry.trainable:
                continue
            func = entry.function()  # None until the function object exists
            func = getattr(func, "__func__", func)
            if not isinstance(func, FunctionType):
                continue
            record = _source_record(func_id, entry, func, marking)
            if record is None:
                continue
            self._source_funcs[func_id] = record
            self.by_name.setdefault(record.name, record)
            self.generation += 1
            deferred = self.deferred_sources.pop(record.name, None)
            if deferred is not None:
                from tracer import patcher  # the patcher imports this module

                error = patcher.apply_deferred_source(record, *deferred)
                if error is not None:
                    self.deferred_source_errors[record.name] = error


registry = ParamRegistry()


def _reset_lock_in_child() -> None:
    # A fork while another thread held the lock (e.g. the receiver thread in
    # the middle of a patch) would leave the child's copy locked forever, and
    # the child's first param() or patch would deadlock. The child has only
    # the forking thread, so a fresh lock is safe.
    registry.lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def _marking() -> ModuleType | None:
    try:
        return importlib.import_module("tracer.marking")
    except ImportError:
        return None


def _source_record(func_id: int, entry: Any, func: FunctionType, marking: ModuleType | None) -> ParamRecord | None:
    from protocol.source_rules import signature_of

    module_name = getattr(entry, "module", None) or func.__module__ or "__main__"
    qualname = getattr(entry, "qualname", None) or func.__qualname__
    definition = None
    for owner in (marking, getattr(marking, "registry", None)):
        lookup = getattr(owner, "function_def", None)
        if lookup is not None:
            try:
                definition = lookup(func_id)
                break
            except Exception:
                definition = None
    source = getattr(definition, "source", None)
    if not source:
        import inspect
        import textwrap
        try:
            source = textwrap.dedent(inspect.getsource(func))
        except (OSError, TypeError):
            return None  # no source to show the LLM or to patch
    namespace = func.__globals__
    prefix = stable_module_name(namespace) if namespace.get("__name__") == module_name else module_name
    name = f"{prefix}.{qualname}".replace(".<locals>.", ".")
    file = getattr(definition, "file", None) or func.__code__.co_filename
    line = getattr(definition, "line", None) or func.__code__.co_firstlineno
    # `where` of a source parameter is "module:qualname": the daemon finds
    # the function's FunctionDef (signature, free variables, file) by it.
    record = ParamRecord(
        name, KIND_SOURCE, source, trainable=True, where=f"{module_name}:{qualname}",
        file=file, line=line, module=module_name, target=qualname,
    )
    record.func_id = func_id
    try:
        record.signature = getattr(definition, "signature", None) or signature_of(func)
    except TypeError:
        return None
    record.freevars = list(func.__code__.co_freevars)
    record.locations.append(_SourceLocation(func))
    return record


# -- the call site: what consumes param()'s result ------------------------------


@dataclass(frozen=True)
class _Site:
    """How the caller's bytecode uses the value param() returns."""

    kind: str                   # global, class_attr, attr, default, cell, local, value
    target: str = ""            # global/attr/arg/cell/local name
    holder: str | None = None   # attr: how the object is loaded ("fast:self", "name:obj", ...)
    code: CodeType | None = None  # default: the function's code object; cell: the enclosing function's
    func_qualname: str = ""     # default: the function's qualname
    keyword_only: bool = False
    # The other targets of a chained assignment (`FIRST = SECOND = param(...)`),
    # in the order they are stored; the parameter is named after the first.
    also: tuple["_Site", ...] = ()


_NOPS = {"NOP", "RESUME", "CACHE", "EXTENDED_ARG", "PRECALL", "KW_NAMES", "NOT_TAKEN"}
_PUSH_ONLY = {
    "LOAD_CONST", "LOAD_NAME", "LOAD_GLOBAL", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_CLOSURE",
    "LOAD_CLASSDEREF", "LOAD_BUILD_CLASS", "PUSH_NULL", "COPY", "DUP_TOP", "DUP_TOP_TWO", "LOAD_FAST_LOAD_FAST",
    "LOAD_SMALL_INT", "LOAD_FAST_BORROW", "LOAD_ASSERTION_ERROR",
}
_SIMPLE_HOLDERS = {
    "LOAD_FAST": "fast", "LOAD_FAST_CHECK": "fast", "LOAD_FAST_BORROW": "fast", "LOAD_NAME": "name",
    "LOAD_GLOBAL": "global", "LOAD_DEREF": "fast", "LOAD_CLASSDEREF": "fast",
}
_CALLS = {"CALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW", "CALL_KW", "CALL_FUNCTION_EX"}


def _pops(instr: dis.Instruction) -> int | None:
    """How many stack items `instr` pops, for the instructions the site scan understands."""
    op, arg = instr.opname, instr.arg or 0
    if op in _NOPS or op in _PUSH_ONLY:
        return 0
    if op == "STORE_FAST_STORE_FAST":
        return 2
    if op in ("STORE_NAME", "STORE_GLOBAL", "STORE_FAST", "STORE_DEREF", "POP_TOP", "LOAD_ATTR", "LOAD_METHOD",
              "TO_BOOL", "FORMAT_SIMPLE", "CONVERT_VALUE", "GET_ITER") or op.startswith("UNARY_"):
        return 1
    if op in ("STORE_ATTR", "SET_FUNCTION_ATTRIBUTE", "FORMAT_WITH_SPEC", "COMPARE_OP", "IS_OP", "CONTAINS_OP") \
            or (op.startswith("BINARY_") and op != "BINARY_SLICE"):
        return 2
    if op == "FORMAT_VALUE":
        return 2 if arg & 0x04 else 1
    if op in ("BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_STRING", "BUILD_SLICE"):
        return arg
    if op == "BUILD_MAP":
        return 2 * arg
    if op == "BUILD_CONST_KEY_MAP":
        return arg + 1
    if op == "CALL":
        return arg + 2
    if op == "CALL_KW":
        return arg + 3
    if op == "CALL_FUNCTION":
        return arg + 1
    if op in ("CALL_METHOD", "CALL_FUNCTION_KW"):
        return arg + 2
    if op == "CALL_FUNCTION_EX":  # callable (and NULL from 3.11), args tuple, kwargs dict if flagged
        return (2 if PY < (3, 11) else 3) + (arg & 0x01)
    if op == "MAKE_FUNCTION":
        if PY >= (3, 13):
            return 1
        return (2 if PY < (3, 11) else 1) + bin(arg & 0x0F).count("1")
    return None


def _pushes(instr: dis.Instruction, pops: int) -> int:
    if instr.opname in _NOPS:
        return 0
    try:
        effect = dis.stack_effect(instr.opcode, instr.arg, jump=False) if instr.opcode >= dis.HAVE_ARGUMENT \
            else dis.stack_effect(instr.opcode)
    except ValueError:
        effect = 0
    if instr.opname in _CALLS or instr.opname == "MAKE_FUNCTION":
        return 1
    return max(0, pops + effect)


def _instructions_after_call(code: CodeType, lasti: int) -> list[dis.Instruction] | None:
    instructions = list(dis.get_instructions(code))
    for index in range(len(instructions) - 1, -1, -1):
        if instructions[index].offset <= lasti:
            if instructions[index].opname not in _CALLS:
                return None  # called some other way (a hook, CALL_FUNCTION_EX): do not guess
            return instructions[index + 1:]
    return None


class _CodeSites:
    """What is known about the param() calls in one code object, by call offset."""

    __slots__ = ("ref", "sites", "records")

    def __init__(self, ref: "weakref.ref[CodeType]"):
        self.ref = ref
        self.sites: dict[int, _Site] = {}
        # offset -> (name= given, record declared there): a second call at the
        # same place (the next instance, the next call) skips naming and lookup.
        self.records: dict[int, tuple[str | None, ParamRecord]] = {}


# id(code) -> its _CodeSites. Keyed by identity: equal code objects of two
# modules must not share default sites, whose `code` is compared by
# identity. The weak reference drops the entry with the code.
_site_cache: dict[int, _CodeSites] = {}


def _code_sites(code: CodeType) -> _CodeSites:
    entry = _site_cache.get(id(code))
    if entry is None or entry.ref() is not code:
        key = id(code)
        entry = _CodeSites(weakref.ref(code, lambda _, key=key: _site_cache.pop(key, None)))
        _site_cache[key] = entry
    return entry


def _analyse_site(entry: _CodeSites, code: CodeType, lasti: int) -> _Site:
    """Follow param()'s result on the stack until an instruction consumes it (no jumps)."""
    site = entry.sites.get(lasti)
    if site is None:
        site = entry.sites[lasti] = _scan(code, lasti)
    return site


class _Sym:
    """One stack item in the site scan: who produced it, and whether it holds param()'s result.

    kind: "ours" (the result, or a hook's pass-through of it), "defaults" /
    "kwdefaults" (a container that holds it, on its way to MAKE_FUNCTION),
    "func" (3.13: a function made from `info`), "other", "unknown".
    """

    __slots__ = ("kind", "instr", "info")

    def __init__(self, kind: str, instr: dis.Instruction | None = None, info: Any = None):
        self.kind, self.instr, self.info = kind, instr, info


_TRACKED = ("ours", "defaults", "kwdefaults")
_STACK_BELOW = 64  # unknown items assumed under the call's result (hooks reach below it with COPY/SWAP)


def _scan(code: CodeType, lasti: int) -> _Site:
    """Simulate the stack after the call, symbolically, until param()'s result is consumed.

    Straight-line code only (a jump ends the scan). Instructions the scan
    does not know end it too: the result is then a "value" parameter, never a
    guess. Calls to the rewriter's `__@trace_*` hooks pass their argument
    through (op mode routes results through them).
    """
    following = _instructions_after_call(code, lasti)
    if following is None:
        return _Site(KIND_VALUE)
    stack = [_Sym("unknown") for _ in range(_STACK_BELOW)] + [_Sym("ours")]
    # A chained assignment stores copies of the result one after the other
    # (`COPY 1; STORE_NAME FIRST; STORE_NAME SECOND`): every store is a place
    # of the parameter, so the scan goes on while a copy is left.
    stores: list[_Site] = []
    for instr in following:
        op = instr.opname
        if instr.opcode in dis.hasjrel or instr.opcode in dis.hasjabs:
            break  # control flow: the stack is no longer a straight line
        if op in _NOPS:
            continue
        if not _shuffle(stack, instr):
            pops = _pops(instr)
            if pops is None or pops > len(stack) - 1:
                break
            popped = stack[len(stack) - pops:] if pops else []
            del stack[len(stack) - pops:]
            pushed, sites = _consume(code, instr, popped)
            stores += sites
            if pushed is None:
                break  # the result went somewhere the scan does not follow
            stack.extend(pushed)
        if not any(sym.kind in _TRACKED for sym in stack):
            break
    if not stores:
        return _Site(KIND_VALUE)
    first = stores[0]
    if len(stores) == 1:
        return first
    return replace(first, also=tuple(stores[1:]))


def _shuffle(stack: list[_Sym], instr: dis.Instruction) -> bool:
    """Apply a stack-shuffling instruction (SWAP, COPY, ROT_*, DUP_*); False if `instr` is not one."""
    op, arg = instr.opname, instr.arg or 0
    if op in ("SWAP", "ROT_TWO", "ROT_THREE", "ROT_FOUR", "ROT_N"):
        depth = {"ROT_TWO": 2, "ROT_THREE": 3, "ROT_FOUR": 4}.get(op, arg)
        if op == "SWAP":
            stack[-1], stack[-depth] = stack[-depth], stack[-1]
        else:  # ROT_*: the top item moves down to `depth`
            stack.insert(len(stack) - depth + 1, stack.pop())
        return True
    if op in ("COPY", "DUP_TOP", "DUP_TOP_TWO"):
        if op == "DUP_TOP_TWO":
            stack.extend(stack[-2:])
        else:
            stack.append(stack[-(arg if op == "COPY" else 1)])
        return True
    return False


def _consume(code: CodeType, instr: dis.Instruction, popped: list[_Sym]) -> tuple[list[_Sym] | None, list[_Site]]:
    """What `instr` pushes given the items it pops, and the sites where it stores the result.

    Returns (None, sites) when the tracked copy it popped is consumed: stored
    (the sites say where) or gone into something the scan does not follow
    (no sites). A store consumes one copy; the scan goes on with the others.
    """
    op = instr.opname
    pushes = _pushes(instr, len(popped))
    mine = [i for i, sym in enumerate(popped) if sym.kind in _TRACKED]
    if not mine:
        info = instr.argval if op == "LOAD_CONST" else None
        if op == "MAKE_FUNCTION":
            info = next((s.instr.argval for s in popped if s.instr is not None and s.instr.opname == "LOAD_CONST"
                         and isinstance(s.instr.argval, CodeType)), None)
        if op == "SET_FUNCTION_ATTRIBUTE" and popped and popped[-1].kind == "func":
            return [popped[-1]], []  # 3.13: the same function, one more attribute set
        kind = "func" if op == "MAKE_FUNCTION" else "other"
        return [_Sym(kind, instr, info) for _ in range(pushes)], []
    ours = popped[mine[0]]
    if op in _CALLS and _is_hook_call(popped):
        return [ours] + [_Sym("other", instr) for _ in range(pushes - 1)], []  # a hook passing it through
    if op == "POP_TOP":
        return [], []  # a copy dropped; the scan stops when no copy is left
    if op == "STORE_FAST_STORE_FAST":  # 3.13: `a = b = ...` of two locals, both copies at once
        if any(sym.kind != "ours" for sym in popped):
            return None, []
        first, second = instr.argval
        return [], [_Site("local", first), _Site("local", second)]
    if ours.kind == "ours":
        position = mine[0]
        if op == "BUILD_TUPLE":
            return [_Sym("defaults", instr, (position, instr.arg))], []
        if op == "BUILD_CONST_KEY_MAP":
            keys = popped[-1].instr
            if keys is not None and keys.opname == "LOAD_CONST" and isinstance(keys.argval, tuple) \
                    and position < len(keys.argval):
                return [_Sym("kwdefaults", instr, keys.argval[position])], []
            return None, []
        site = _store_site(code, instr, popped, position)
        if site is None:
            return None, []
        # Only a plain store keeps the scan going: any other copy it popped is gone too.
        return ([] if len(mine) == 1 else None), [site]
    site = _function_site(instr, popped, mine[0], ours)
    return None, ([site] if site is not None else [])


def _is_hook_call(popped: list[_Sym]) -> bool:
    for sym in popped[:2]:  # the callable is first, or second after a NULL / before self
        instr = sym.instr
        if instr is not None and instr.opname in ("LOAD_GLOBAL", "LOAD_NAME") and _load_name(instr).startswith("__@trace_"):
            return True
    return False


def _store_site(code: CodeType, instr: dis.Instruction, popped: list[_Sym], position: int) -> _Site | None:
    op = instr.opname
    if op in ("STORE_NAME", "STORE_GLOBAL"):
        kind = "global" if op == "STORE_GLOBAL" or code.co_name == "<module>" else "class_attr"
        if op == "STORE_NAME" and code.co_flags & 0x0001:  # CO_OPTIMIZED: a function, not a namespace
            kind = "local"
        return _Site(kind, instr.argval)
    if op == "STORE_DEREF" and instr.argval in code.co_cellvars:
        # A variable of this function that nested functions read as a free
        # variable. (A `nonlocal` store, to a cell of an outer function that
        # this code cannot name, stays a plain local.)
        return _Site("cell", instr.argval, code=code)
    if op in ("STORE_FAST", "STORE_DEREF"):
        return _Site("local", instr.argval)
    if op == "STORE_ATTR" and position == 0:
        holder = popped[1].instr
        if holder is not None and holder.opname in _SIMPLE_HOLDERS:
            return _Site("attr", instr.argval, holder=f"{_SIMPLE_HOLDERS[holder.opname]}:{_load_name(holder)}")
        return None
    return None


def _function_site(instr: dis.Instruction, popped: list[_Sym], position: int, container: _Sym) -> _Site | None:
    """The default-argument site when a defaults container reaches MAKE_FUNCTION / SET_FUNCTION_ATTRIBUTE."""
    op = instr.opname
    if op not in ("MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE"):
        return None
    if _function_slot(instr, position) != container.kind:
        return None
    code_obj: CodeType | None = None
    qualname: str | None = None
    for sym in popped:
        if sym.kind == "func":
            code_obj = sym.info
        elif sym.instr is not None and sym.instr.opname == "LOAD_CONST":
            if isinstance(sym.instr.argval, CodeType):
                code_obj = sym.instr.argval
            elif isinstance(sym.instr.argval, str):
                qualname = sym.instr.argval  # 3.10 passes the qualname as a constant
    if code_obj is None:
        return None
    qualname = getattr(code_obj, "co_qualname", None) or qualname or code_obj.co_name
    if container.kind == "defaults":
        index, count = container.info
        names = code_obj.co_varnames[: code_obj.co_argcount]
        return _Site("default", names[len(names) - count + index], code=code_obj, func_qualname=qualname)
    return _Site("default", str(container.info), code=code_obj, func_qualname=qualname, keyword_only=True)


def _load_name(instr: dis.Instruction) -> str:
    value = instr.argval
    if isinstance(value, tuple):  # 3.11+ LOAD_GLOBAL (push_null, name)
        value = value[-1]
    return str(value)


def _function_slot(instr: dis.Instruction, position: int) -> str | None:
    flags = instr.arg or 0
    if instr.opname == "SET_FUNCTION_ATTRIBUTE":
        if position != 0:
            return None
        return {0x01: "defaults", 0x02: "kwdefaults"}.get(flags)
    roles = [name for bit, name in ((0x01, "defaults"), (0x02, "kwdefaults"), (0x04, "annotations"), (0x08, "closure")) if flags & bit]
    return roles[position] if position < len(roles) else None


_qualnames: "weakref.WeakKeyDictionary[CodeType, str]" = weakref.WeakKeyDictionary()


def _code_qualname(code: CodeType) -> str:
    qualname = getattr(code, "co_qualname", None)
    if qualname:
        return qualname
    # 3.10: code objects do not know their qualname; the function running
    # them does. gc.get_referrers walks the heap, so remember the answer.
    # (Equal code objects share the entry: same file, line and name.)
    known = _qualnames.get(code)
    if known is not None:
        return known
    qualname = code.co_name
    for holder in gc.get_referrers(code):
        if isinstance(holder, FunctionType) and holder.__code__ is code:
            qualname = holder.__qualname__
            break
    _qualnames[code] = qualname
    return qualname


def _owner_class_qualname(code_qualname: str) -> str | None:
    """`Agent` for a method `Agent.__init__`; None for a plain function."""
    parts = code_qualname.split(".")
    if len(parts) >= 2 and parts[-2] != "<locals>":
        return ".".join(parts[:-1])
    return None


# -- the public API -------------------------------------------------------------


def param(value: Any, name: str | None = None, constraint: str | None = None, trainable: bool = True) -> Any:
    """Declare `value` a parameter the optimizer may change; return the plain value.

    Where the caller stores the result (module global, class attribute,
    instance attribute, default argument) is recorded so a patch can replace
    it there. Once a patch has set the parameter, later calls at the same
    place return the patched value. The result is an equal, unshared copy
    where CPython would share the object (module docstring). Never raises
    for tracing reasons; `TypeError` for a bad `name` or `constraint`.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"tracer.param(name=...) must be a non-empty str, got {name!r}")
    if constraint is not None and not isinstance(constraint, str):
        raise TypeError(f"tracer.param(constraint=...) must be a str describing the allowed values, got {constraint!r}")
    try:
        frame = sys._getframe(1)
    except ValueError:
        frame = None
    try:
        return _declare(value, name, constraint, bool(trainable), frame)
    except Exception:
        # Tracing must never break the program: fall back to the plain value.
        return value
    finally:
        del frame


def _declare(value: Any, name: str | None, constraint: str | None, trainable: bool, frame: FrameType | None) -> Any:
    if frame is None:
        return value
    code, lasti = frame.f_code, frame.f_lasti
    entry = _code_sites(code)
    site = _analyse_site(entry, code, lasti)
    known = entry.records.get(lasti)
    if known is not None and known[0] == name:
        result = _redeclare_at_known_place(known[1], site, frame, value, constraint)
        if result is not _MISSING:
            return result
    namespace = frame.f_globals
    kind, target, derived, location, holder_obj = _place(site, frame)
    line = None  # frame.f_lineno reads the line table: only when needed
    if kind == KIND_VALUE and site.kind not in ("local", "cell"):
        line = frame.f_lineno
        target = derived = f"{derived}@{line}"
    param_name = name or derived.replace(".<locals>.", ".")

    with registry.lock:
        record = registry.by_name.get(param_name)
        if record is None:
            file, line = code.co_filename, line or frame.f_lineno
            module_real = namespace.get("__name__", "__main__")
            where = f"{kind} {module_real}:{target} @ {file}:{line}"
            result = unshared_copy(value)
            record = ParamRecord(param_name, kind, result, constraint=constraint, trainable=trainable, where=where,
                                 file=file, line=line, module=module_real, target=target)
            deferred = registry.deferred.pop(param_name, None)
            if deferred is not None:
                try:
                    result = unshared_copy(coerce_value(result, deferred[1], name=param_name))
                    record.value, record.version, record.patched = result, deferred[0], True
                except ParamTypeError:
                    pass  # the declared value stays; the daemon heard about the patch already
            registry.by_name[param_name] = record
            registry.generation += 1
        else:
            result = _redeclared(record, value)
            if constraint is not None:
                record.constraint = constraint
        _keep_place(record, site, kind, location, holder_obj, result)
        for other in site.also:  # the other targets of a chained assignment
            other_kind, _, _, other_location, other_holder = _place(other, frame)
            _keep_place(record, other, other_kind, other_location, other_holder, result)
        entry.records[lasti] = (name, record)
        return result


def _keep_place(record: ParamRecord, site: _Site, kind: str, location: _Location | None, holder_obj: Any,
                result: Any) -> None:
    """Add one place where `param()` just stored `result` to `record` (registry lock held)."""
    if kind == KIND_INSTANCE_ATTR:
        location = _instance_location(record, holder_obj, site.target, result)
    if isinstance(location, _ClassAttrLocation):
        location.marker = result
    if isinstance(location, _DefaultLocation):
        for known in record.locations:
            if known.same_place(location):
                known.stale = True  # type: ignore[attr-defined]
    if location is not None:
        kept = registry._add_location(record, location)
        if isinstance(kept, _CellLocation):
            kept.declared(result)


def _redeclare_at_known_place(record: ParamRecord, site: _Site, frame: FrameType, value: Any,
                              constraint: str | None) -> Any:
    """The fast path of a repeated declaration (the next instance, the next call); _MISSING: take the slow one."""
    if site.also:
        return _MISSING  # a chained assignment: every target is looked at again
    if record.kind == KIND_INSTANCE_ATTR and site.kind == "attr":
        holder = _load_holder(site.holder, frame)
        if isinstance(holder, (type, ModuleType)):
            return _MISSING
        with registry.lock:
            result = _redeclared(record, value)
            if constraint is not None:
                record.constraint = constraint
            location = _instance_location(record, holder, site.target, result)
            if isinstance(location, _InstanceAttrLocation):
                record.instances[(id(holder), site.target)] = location
            else:
                registry._add_location(record, location)
            return result
    if record.kind == KIND_VALUE and site.kind in ("local", "cell", KIND_VALUE):
        with registry.lock:
            result = _redeclared(record, value)
            if constraint is not None:
                record.constraint = constraint
            if site.kind == "cell":
                owner = _code_qualname(frame.f_code)
                for location in record.locations:
                    if isinstance(location, _CellLocation) and location.is_variable(frame.f_globals, owner, site.target):
                        location.declared(result)
            return result
    return _MISSING


def _place(site: _Site, frame: FrameType) -> tuple[str, str, str, _Location | None, Any]:
    """(kind, target, default name, location, holder object) for a param() call site."""
    code, namespace = frame.f_code, frame.f_globals
    if site.kind == "global" or (site.kind == "class_attr" and frame.f_locals is namespace):
        module = stable_module_name(namespace)
        return KIND_GLOBAL, site.target, f"{module}.{site.target}", _GlobalLocation(namespace, site.target), None
    if site.kind == "class_attr":
        body = frame.f_locals
        if "__module__" not in body or "__qualname__" not in body:
            return KIND_VALUE, site.target, _code_qualname(code), None, None  # exec() with its own locals
        class_qualname = body["__qualname__"]
        target = f"{class_qualname}.{site.target}"
        return KIND_CLASS_ATTR, target, target, _ClassAttrLocation(namespace, class_qualname, site.target), None
    if site.kind == "attr":
        holder = _load_holder(site.holder, frame)
        if isinstance(holder, ModuleType):
            owner_module = stable_module_name(holder.__dict__)
            return (KIND_GLOBAL, site.target, f"{owner_module}.{site.target}",
                    _GlobalLocation(holder.__dict__, site.target), None)
        if isinstance(holder, type):
            target = f"{holder.__qualname__}.{site.target}"
            home = getattr(sys.modules.get(holder.__module__), "__dict__", namespace)
            return KIND_CLASS_ATTR, target, target, _ClassAttrLocation(home, holder.__qualname__, site.target, holder), None
        owner = _owner_class_qualname(_code_qualname(code)) or type(holder).__qualname__
        target = f"{owner}.{site.target}"
        return KIND_INSTANCE_ATTR, target, target, None, holder  # location made once the value is known
    if site.kind == "default":
        target = f"{site.func_qualname}.{site.target}"
        location = _DefaultLocation(namespace, site.func_qualname, site.code, site.target, site.keyword_only)
        return KIND_DEFAULT, target, target, location, None
    qualname = _code_qualname(code)
    prefix = stable_module_name(namespace) if qualname == "<module>" else qualname
    if site.kind == "cell":
        # Named like a local (it is one, of the enclosing function); the
        # location makes it patchable in the closures that read it.
        target = f"{prefix}.{site.target}"
        return KIND_VALUE, target, target, _CellLocation(namespace, site.code or code, qualname, site.target), None
    if site.kind == "local":
        target = f"{prefix}.{site.target}"
        return KIND_VALUE, target, target, None, None
    return KIND_VALUE, prefix, prefix, None, None


def _redeclared(record: ParamRecord, value: Any) -> Any:
    """What a second `param()` at a known place returns: the patched value once patched."""
    if record.patched:
        return _fresh(record.value)
    if _is_immutable(value) and type(value) is type(record.value) and value == record.value:
        return record.value  # keep one object, so identity stays meaningful
    record.value = unshared_copy(value)
    return record.value


def _instance_location(record: ParamRecord, instance: Any, attr: str, given: Any) -> _Location:
    instances, key = record.instances, (id(instance), attr)
    try:
        return _InstanceAttrLocation(instance, attr, given, on_death=lambda _ref: instances.pop(key, None))
    except TypeError:  # no weak references (__slots__ without __weakref__)
        return _UnreferenceableInstancesLocation(type(instance), attr, given)


def _load_holder(holder: str | None, frame: FrameType) -> Any:
    how, _, name = (holder or "").partition(":")
    if how == "fast":
        return frame.f_locals[name]
    if how == "name":
        if name in frame.f_locals:
            return frame.f_locals[name]
    if name in frame.f_globals:
        return frame.f_globals[name]
    return frame.f_builtins[name]


def register_config_param(spec: str, *, constraint: str | None = None, trainable: bool = True,
                          namespace: dict | None = None) -> ParamRecord:
    """Declare an existing module global or class attribute a parameter, by configuration.

    `spec` is ``"MOD:NAME"`` or ``"MOD:Class.attr"``; the import hook calls
    this after module MOD executed (pass `namespace` for a module that is not
    in `sys.modules` under MOD, e.g. a script run as `__main__`). The value in
    place is swapped for an equal unshared copy. Returns the record; raises
    `ConfigParamError` if the module, class or name does not exist.
    """
    module_name, sep, target = spec.partition(":")
    if not sep or not module_name or not target:
        raise ConfigParamError(f"parameter spec {spec!r} must look like 'module:NAME' or 'module:Class.attr'")
    if namespace is None:
        module = sys.modules.get(module_name)
        if module is None:
            raise ConfigParamError(f"parameter {spec!r}: module {module_name!r} is not imported")
        namespace = module.__dict__
    parts = target.split(".")
    file = namespace.get("__file__")
    with registry.lock:
        if len(parts) == 1:
            if target not in namespace:
                raise ConfigParamError(f"parameter {spec!r}: module {module_name!r} has no global {target!r}")
            location: _Location = _GlobalLocation(namespace, target)
            kind, name = KIND_GLOBAL, f"{stable_module_name(namespace)}.{target}"
            current = namespace[target]
            if isinstance(current, (FunctionType, type, ModuleType)):
                raise ConfigParamError(f"parameter {spec!r} is a {type(current).__name__}; use --trainable for functions")
        else:
            class_qualname, attr = ".".join(parts[:-1]), parts[-1]
            cls = _resolve_qualname(namespace, class_qualname)
            if not isinstance(cls, type):
                raise ConfigParamError(f"parameter {spec!r}: module {module_name!r} has no class {class_qualname!r}")
            if attr not in cls.__dict__:
                raise ConfigParamError(f"parameter {spec!r}: class {class_qualname} has no attribute {attr!r} of its own")
            location = _ClassAttrLocation(namespace, class_qualname, attr, cls)
            kind, name = KIND_CLASS_ATTR, f"{class_qualname}.{attr}"
            current = cls.__dict__[attr]
            if isinstance(current, (FunctionType, staticmethod, classmethod, property)):
                raise ConfigParamError(f"parameter {spec!r} is a method; use --trainable for functions")
        record = registry.by_name.get(name)
        if record is None:
            value = unshared_copy(current)
            # A patch that reached this process before the module ran (it joined a
            # session that already has a newer version) was deferred; it takes
            # effect now, as it does for tracer.param().
            deferred = registry.deferred.pop(name, None)
            if deferred is not None:
                try:
                    value = unshared_copy(coerce_value(value, deferred[1], name=name))
                except ParamTypeError:
                    deferred = None  # the declared value stays; the daemon heard about the patch already
            if value is not current:
                location.write(value)
            record = ParamRecord(name, kind, value, constraint=constraint, trainable=trainable,
                                 where=f"{kind} {namespace.get('__name__', module_name)}:{target} @ {file or '?'}:0",
                                 file=file, line=None, module=namespace.get("__name__", module_name), target=target)
            if deferred is not None:
                record.version, record.patched = deferred[0], True
            registry.by_name[name] = record
        registry._add_location(record, location)
        return record


def register_source_param(func: Any, *, name: str | None = None) -> ParamRecord:
    """Make the source of `func` a trainable parameter of kind "source"; return its record.

    Marked trainable functions (`tracer.marking.registry`) become parameters
    by themselves; this is for a function marked some other way. `func` may
    be a function, classmethod, staticmethod or bound method (its underlying
    function is used). Raises `TypeError` if it is not a Python function or
    its source cannot be read.
    """
    target = getattr(func, "__func__", func)
    if not isinstance(target, FunctionType):
        raise TypeError(f"only Python functions can have a source parameter, got {type(func).__name__}")
    module_name = target.__module__ or target.__globals__.get("__name__", "__main__")
    func_id = ids.function_id(module_name, target.__qualname__)
    with registry.lock:
        known = registry._source_funcs.get(func_id)
        if known is not None and known.function() is target:
            return known
        entry = _PlainEntry(module_name, target.__qualname__)
        record = _source_record(func_id, entry, target, None)
        if record is None:
            raise TypeError(f"the source of {target.__qualname__} cannot be read (defined in a REPL or exec?)")
        if name:
            record.name = name
        registry._source_funcs[func_id] = record
        registry.by_name[record.name] = record
        registry.generation += 1
        return record


@dataclass
class _PlainEntry:
    module: str
    qualname: str
