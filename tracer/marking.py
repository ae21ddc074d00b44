"""Marking: which functions are traced, and the rewriter's front door.

    @tracer.bundle()                  # traced operator
    def summarize(text): ...

    @tracer.bundle(trainable=True)    # its source is a parameter too
    def answer(question): ...

`bundle` returns the *same* object it was given, with the function's
`__code__` replaced by an instrumented copy: no wrapper, so identity,
pickling by reference, `inspect`, `functools.wraps` users and recursion all
see the original function. The import hook and `trace-run --target` use
`instrument_code` / `instrument_function` for the same result without a
decorator.

Granularity (`call` or `op`) is read when code is instrumented: from
`set_granularity`, else the `TRACE_GRANULARITY` environment variable, else
`call`. A `granularity=` argument overrides it for one function.
"""
from __future__ import annotations

import ast
import inspect
import os
import textwrap
import threading
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tracer import hook_table, hooks
from tracer.ids import function_id

GRANULARITIES = ("call", "op")


class MarkingError(TypeError):
    """`bundle` / `instrument_function` was given something it cannot instrument."""


_granularity: Optional[str] = None


def _check_granularity(value: str, where: str) -> str:
    if value not in GRANULARITIES:
        raise ValueError(f"{where}: granularity must be 'call' or 'op', got {value!r}")
    return value


def set_granularity(value: Optional[str]) -> None:
    """Set the process-wide granularity used for code instrumented from now on (None: env/default)."""
    global _granularity
    _granularity = None if value is None else _check_granularity(value, "set_granularity")


def get_granularity() -> str:
    """The granularity new instrumentation uses: set_granularity, else $TRACE_GRANULARITY, else 'call'."""
    if _granularity is not None:
        return _granularity
    env = os.environ.get("TRACE_GRANULARITY")
    if env:
        return _check_granularity(env.strip().lower(), "TRACE_GRANULARITY")
    return "call"


@dataclass
class MarkedFunction:
    """One marked function. `func` is a weak reference (None until the function object is known)."""

    id: int
    module: str
    qualname: str
    func: Optional[Callable[[], Optional[types.FunctionType]]]
    trainable: bool
    granularity: str = "call"
    code: Optional[types.CodeType] = None  # the original (uninstrumented) code, when known
    argnames: tuple = ()
    sites: dict = field(default_factory=dict)  # op mode: site id -> SiteDef fields

    def function(self) -> Optional[types.FunctionType]:
        """The live function object, or None (not created yet, or collected)."""
        return self.func() if self.func is not None else None


class MarkingRegistry(dict):
    """func id -> MarkedFunction, plus lookups of the definitions the daemon needs."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._defs: dict[int, Any] = {}
        self._site_owner: dict[int, int] = {}

    def add(self, entry: MarkedFunction) -> MarkedFunction:
        with self._lock:
            old = self.get(entry.id)
            if old is not None:
                old.trainable = old.trainable or entry.trainable
                if entry.func is not None:
                    old.func = entry.func
                if entry.code is not None and old.code is None:
                    old.code = entry.code
                old.argnames = entry.argnames or old.argnames
                old.granularity = entry.granularity
                old.sites.update(entry.sites)
                entry = old
            else:
                self[entry.id] = entry
            for site_id in entry.sites:
                self._site_owner[site_id] = entry.id
            self._defs.pop(entry.id, None)
            return entry

    def function_def(self, func_id: int):
        """The protocol FunctionDef of a marked function (KeyError if it is not marked)."""
        entry = self[func_id]
        cached = self._defs.get(func_id)
        if cached is not None:
            return cached
        definition = _build_function_def(entry)
        self._defs[func_id] = definition
        return definition

    def site_def(self, site_id: int):
        """The protocol SiteDef of an op-mode site (KeyError if unknown)."""
        from protocol import messages as m

        owner = self[self._site_owner[site_id]]
        op, line, col, text = owner.sites[site_id]
        return m.SiteDef(id=site_id, func=owner.id, op=op, line=line, col=col, text=text)


registry = MarkingRegistry()


def function_def(func_id: int):
    """The protocol FunctionDef of marked function `func_id` (KeyError if it is not marked)."""
    return registry.function_def(func_id)


def _source_of(entry: MarkedFunction) -> tuple[str, str, int]:
    """(dedented source, file, first line) of a marked function, '' when not available."""
    func = entry.function()
    target: Any = func if func is not None else entry.code
    file = ""
    line = 0
    code = func.__code__ if func is not None else entry.code
    if code is not None:
        file, line = code.co_filename, code.co_firstlineno
    try:
        source = textwrap.dedent(inspect.getsource(target)) if target is not None else ""
    except (OSError, TypeError):
        source = ""
    return source, file, line


def _build_function_def(entry: MarkedFunction):
    from protocol import messages as m

    source, file, line = _source_of(entry)
    func = entry.function()
    doc = None
    signature = ""
    if source:
        try:
            tree = ast.parse(source)
            node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
            if node is not None:
                doc = ast.get_docstring(node)
        except SyntaxError:
            pass
    try:
        from protocol.source_rules import signature_of
        signature = signature_of(func if func is not None else source)
    except Exception:
        signature = "(" + ", ".join(entry.argnames) + ")"
    if doc is None and func is not None:
        doc = func.__doc__
    code = func.__code__ if func is not None else entry.code
    return m.FunctionDef(
        id=entry.id, module=entry.module, qualname=entry.qualname, source=source, doc=doc,
        signature=signature, file=file, line=line, trainable=entry.trainable,
        freevars=list(code.co_freevars) if code is not None else [],
    )


def install_hook_globals(namespace: dict) -> None:
    """Put the `__@trace_*` hook names into a module namespace (before its code runs).

    This is the contract of docs/internals.md §4 (trace-run's runner swaps
    the entry hooks in `__main__`'s namespace). Known cost: the names show in
    the module's `vars()` / `dir()` (CPython's test_argparse notices);
    putting them only into `builtins` would keep namespaces clean.
    """
    if namespace.get("__@trace_enter") is not hooks.enter:
        namespace.update(hook_table.HOOK_GLOBALS)


def is_instrumented(code: types.CodeType) -> bool:
    """True if `code` was produced by this rewriter."""
    return "__@trace_enter" in code.co_names or "__@trace_op_enter" in code.co_names


def instrument_code(code: types.CodeType, *, module: str, trainable: bool = False,
                    qualname: Optional[str] = None, granularity: Optional[str] = None) -> types.CodeType:
    """Rewrite one function's code object (with the nested code it owns) and register it.

    `qualname` defaults to `code.co_qualname` (3.11+) or `co_name`; pass it
    on 3.10 for nested and method code. The result is marshallable: hooks
    are reached through `__@trace_*` globals, which `install_hook_globals`
    must put into the module namespace the function runs in. Raises
    `tracer.rewrite.RewriteError` if the code cannot be instrumented.
    """
    from tracer import rewrite

    if not isinstance(code, types.CodeType):
        raise MarkingError(f"instrument_code needs a code object, got {type(code).__name__}")
    if qualname is None:
        qualname = getattr(code, "co_qualname", code.co_name)
    mode = _check_granularity(granularity, "granularity") if granularity else get_granularity()
    func_id = function_id(module, qualname)
    if is_instrumented(code):
        registry.add(MarkedFunction(func_id, module, qualname, None, trainable, mode))
        return code
    result = rewrite.instrument(code, func_id=func_id, module=module, qualname=qualname, granularity=mode)
    registry.add(MarkedFunction(
        func_id, module, qualname, None, trainable, mode, code=code,
        argnames=tuple(rewrite.argument_names(code)), sites=result.sites))
    return result.code


def register_function(func: types.FunctionType, *, module: Optional[str] = None,
                      qualname: Optional[str] = None, trainable: bool = False) -> MarkedFunction:
    """Record the function object of code instrumented by `instrument_code` (the import hook)."""
    module = module or func.__module__ or "__main__"
    qualname = qualname or func.__qualname__
    entry = MarkedFunction(function_id(module, qualname), module, qualname, weakref.ref(func), trainable,
                           get_granularity(), argnames=tuple(_argnames(func.__code__)))
    return registry.add(entry)


def _argnames(code: types.CodeType) -> list[str]:
    from tracer import rewrite
    return rewrite.argument_names(code)


def instrument_function(func: Any, *, trainable: bool = False, granularity: Optional[str] = None) -> None:
    """Instrument `func.__code__` in place (functions found by configuration after import).

    Idempotent: a function already instrumented is only re-registered
    (with `trainable` or-ed in). Raises `MarkingError` for objects that are
    not Python functions (builtins, callables without code).
    """
    for target in _functions_of(func):
        _instrument_one(target, trainable=trainable, granularity=granularity)


def _functions_of(obj: Any) -> list[types.FunctionType]:
    if isinstance(obj, (classmethod, staticmethod)):
        return _functions_of(obj.__func__)
    if isinstance(obj, property):
        found = [f for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
        return [g for f in found for g in _functions_of(f)]
    if isinstance(obj, types.MethodType):
        return _functions_of(obj.__func__)
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None and wrapped is not obj:
        # a decorator's wrapper (functools.wraps, lru_cache): the function the
        # user wrote is the operator (and, if trainable, the source to optimise)
        return _functions_of(wrapped)
    if isinstance(obj, types.FunctionType):
        return [obj]
    raise MarkingError(
        f"cannot trace {obj!r}: only Python functions, methods, classmethods, staticmethods and "
        f"properties can be marked (got {type(obj).__name__})")


def _instrument_one(func: types.FunctionType, *, trainable: bool, granularity: Optional[str]) -> None:
    module = func.__module__ or "__main__"
    qualname = func.__qualname__
    code = func.__code__
    install_hook_globals(func.__globals__)
    if not is_instrumented(code):
        func.__code__ = instrument_code(code, module=module, trainable=trainable, qualname=qualname,
                                        granularity=granularity)
    register_function(func, module=module, qualname=qualname, trainable=trainable)


def bundle(trainable: Any = False, granularity: Optional[str] = None):
    """Decorator: trace the function (and with `trainable=True`, make its source a parameter).

    Returns the same object it decorates (function, classmethod,
    staticmethod, property, or a decorator's wrapper with `__wrapped__`, whose
    wrapped function is traced), never a wrapper of its own. `@bundle`
    without parentheses works too.
    """
    if callable(trainable) or isinstance(trainable, (classmethod, staticmethod, property)):
        func, trainable = trainable, False
        _bundle_one(func, False, granularity)
        return func
    if granularity is not None:
        _check_granularity(granularity, "bundle")
    if not isinstance(trainable, bool):
        raise MarkingError(f"bundle(trainable=...) must be True or False, got {trainable!r}")

    def decorate(obj):
        _bundle_one(obj, trainable, granularity)
        return obj

    return decorate


class BundleNotTracedWarning(UserWarning):
    """`bundle` could not instrument a function; it runs untraced (the program is unaffected)."""


def _bundle_one(obj: Any, trainable: bool, granularity: Optional[str]) -> None:
    from tracer.rewrite import RewriteError

    try:
        instrument_function(obj, trainable=trainable, granularity=granularity)
    except RewriteError as exc:
        # Tracing must never break the program: run the function as written.
        import warnings
        warnings.warn(f"tracer: {exc}; it runs untraced. Please report this as a tracer bug.",
                      BundleNotTracedWarning, stacklevel=3)
