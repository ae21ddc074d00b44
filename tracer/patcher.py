"""Live patching: apply the optimizer's new parameter values and function source here.

    results = apply_patch(patch)      # protocol Patch -> list[PatchResult], one per item
    rollback_to(3)                    # back to what version 3 left in place

A patch is atomic: every item applies or nothing changes. Items are first
prepared without touching the program (type checks, the source rule,
compilation, instrumentation); then applied one by one, and if one fails
the ones already applied are put back. Every result then says ok=False, the
failing item with its reason, the others with "not applied: ...".

Values are written everywhere the parameter is stored (`tracer.params`):
module globals (also `__main__`, and other modules that did
``from mod import NAME`` of an unshared value), class attributes, the
attribute of every live instance (tracked by weak references; instances
that refuse them are found through `gc.get_referrers`), default arguments.

New source is checked with `protocol.source_rules.check_function_source`,
compiled in the function's own module and nesting (so closures keep their
cells, methods keep private-name mangling and `super()`), instrumented
through `tracer.marking.instrument_code` and swapped into the same function
object, and into every other function made from the same `def` (closures).
`linecache` gets the new text under ``<trace-live patch vN of NAME>``, so
tracebacks and `inspect.getsource` show it.

Patches are applied under the parameter registry's lock, on the thread
that receives them. Frames already running finish on the old code; every
call that starts afterwards, on any thread, runs the new code.

A name this process has not declared yet (a module not imported yet) is
kept and applied when `tracer.param` declares it; its result is ok. With
``defer_unknown_sources=True`` (what a running process asks for) the same
holds for new source of a trainable function not defined here yet: it is
swapped in when the function is (`tracer.params` registers it).
"""
from __future__ import annotations

import __future__
import ast
import builtins
import dis
import gc
import linecache
import textwrap
from dataclasses import dataclass, field
from types import CodeType, FunctionType
from typing import Any, Callable

from protocol import messages as m
from protocol.source_rules import (
    SourceRejected,
    check_function_source,
    find_nested_code,
    parse_function_source,
    scoped_module,
    signature_of,
)
from tracer import params
from tracer.params import KIND_SOURCE, ParamRecord, ParamTypeError

__all__ = [
    "apply_patch",
    "rollback_to",
    "replace_source",
    "history",
    "current_version",
    "PatchRejected",
    "patch_filename",
]

# Code flags that change what calling the function returns (a generator, a coroutine...).
_KIND_FLAGS = 0x0020 | 0x0080 | 0x0100 | 0x0200
_KIND_NAMES = {0: "a plain function", 0x0020: "a generator function", 0x0080: "a coroutine function",
               0x0100: "an iterable coroutine", 0x0200: "an async generator function"}
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


class PatchRejected(ValueError):
    """One patch item cannot be applied; `reason` says why (it becomes feedback)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _SourceState:
    source: str
    code: CodeType
    doc: str | None


@dataclass
class _Prepared:
    """An item ready to apply: `apply()` changes the program and returns its undo."""

    name: str
    apply: Callable[[], Callable[[], None]]
    state: Any = None          # what the parameter holds afterwards (for history)
    note: str | None = None    # said in an ok result (e.g. applied uninstrumented)


@dataclass
class _History:
    original: Any                                             # value or _SourceState before any patch
    applied: list[tuple[int, Any]] = field(default_factory=list)  # (version, state), in order applied


_histories: dict[str, _History] = {}
_version = 0


def patch_filename(version: int, name: str) -> str:
    """The pseudo-filename new source of parameter `name` is compiled under."""
    return f"<trace-live patch v{version} of {name}>"


def current_version() -> int:
    """The version of the last patch applied (or rolled back to) in this process; 0 if none."""
    return _version


def history(name: str) -> list[tuple[int, Any]]:
    """[(version, value or source text)] applied to parameter `name`, oldest first, version 0 first."""
    with params.registry.lock:
        entry = _histories.get(name)
        if entry is None:
            return []
        return [(0, _plain(entry.original))] + [(v, _plain(s)) for v, s in entry.applied]


def apply_patch(patch: m.Patch, *, defer_unknown_sources: bool = False) -> list[m.PatchResult]:
    """Apply every item of `patch` or none; one `PatchResult` per item, in order.

    New source for a function this process does not have is rejected, unless
    `defer_unknown_sources`: then it is kept (ok, with a note) and swapped in
    once the function is defined, as values are for parameters declared later.
    A process that joins a session, or has not imported every module of it,
    then still applies the rest of the version.
    """
    global _version
    with params.registry.lock:
        prepared: list[_Prepared] = []
        for item in patch.items:
            try:
                prepared.append(_prepare(item, patch.version, defer_unknown_sources))
            except PatchRejected as exc:
                return _all_failed(patch.items, item.name, exc.reason)
        failed_name, reason = _apply_all(prepared)
        if failed_name is not None:
            return _all_failed(patch.items, failed_name, reason)
        for item in prepared:
            if item.state is not _DEFERRED:
                _histories[item.name].applied.append((patch.version, item.state))
        _version = patch.version
        return [m.PatchResult(name=item.name, ok=True, error=item.note) for item in prepared]


def rollback_to(version: int) -> list[m.PatchResult]:
    """Put back what patch `version` left in place (0: everything as declared).

    Patches applied after it are forgotten here. Atomic like `apply_patch`;
    one result per parameter that changes.
    """
    global _version
    with params.registry.lock:
        prepared = []
        for name, entry in _histories.items():
            kept = [(v, s) for v, s in entry.applied if v <= version]
            if len(kept) == len(entry.applied):
                continue
            target_version, target = kept[-1] if kept else (0, entry.original)
            record = params.registry.get(name)
            if record is None:
                continue
            try:
                prepared.append(_prepare_restore(record, target, target_version))
            except PatchRejected as exc:
                return _all_failed(prepared + [_Prepared(name, lambda: (lambda: None))], name, exc.reason)
        failed_name, reason = _apply_all(prepared)
        if failed_name is not None:
            return _all_failed(prepared, failed_name, reason)
        for name, entry in _histories.items():
            entry.applied = [(v, s) for v, s in entry.applied if v <= version]
        _version = version
        return [m.PatchResult(name=item.name, ok=True) for item in prepared]


def replace_source(record: ParamRecord, source: str, *, version: int | None = None) -> None:
    """Swap new source into the function of a "source" parameter, or raise `PatchRejected`."""
    with params.registry.lock:
        number = version if version is not None else _version
        prepared = _prepare_source(record, source, number)
        prepared.apply()
        _histories[record.name].applied.append((number, prepared.state))


# -- preparing items (no change to the program) ---------------------------------

_DEFERRED = object()


def _prepare(item: m.PatchItem, version: int, defer_unknown_sources: bool = False) -> _Prepared:
    record = params.registry.get(item.name)
    if item.kind not in ("value", "source"):
        raise PatchRejected(f"unknown patch kind {item.kind!r} (expected 'value' or 'source')")
    if record is None:
        if item.kind == "source":
            if not defer_unknown_sources:
                raise PatchRejected(f"no trainable function {item.name!r} in this process")
            if not isinstance(item.source, str):
                raise PatchRejected(f"source patch of {item.name!r} carries no source text")
            return _prepare_deferred_source(item, version)
        return _prepare_deferred(item, version)
    if not record.trainable:
        raise PatchRejected(f"parameter {item.name!r} is declared trainable=False")
    if item.kind == "source":
        if record.kind != KIND_SOURCE:
            raise PatchRejected(f"parameter {item.name!r} is a {record.type} value, not a function: send kind 'value'")
        if not isinstance(item.source, str):
            raise PatchRejected(f"source patch of {item.name!r} carries no source text")
        return _prepare_source(record, item.source, version)
    if record.kind == KIND_SOURCE:
        raise PatchRejected(f"parameter {item.name!r} is a function: send its new source with kind 'source'")
    return _prepare_value(record, item.value, version)


def _prepare_deferred(item: m.PatchItem, version: int) -> _Prepared:
    def apply() -> Callable[[], None]:
        previous = params.registry.deferred.get(item.name)
        params.registry.deferred[item.name] = (version, item.value)

        def undo() -> None:
            if previous is None:
                params.registry.deferred.pop(item.name, None)
            else:
                params.registry.deferred[item.name] = previous
        return undo

    return _Prepared(item.name, apply, state=_DEFERRED)


def _prepare_deferred_source(item: m.PatchItem, version: int) -> _Prepared:
    def apply() -> Callable[[], None]:
        pending = params.registry.deferred_sources
        previous = pending.get(item.name)
        pending[item.name] = (version, item.source)

        def undo() -> None:
            if previous is None:
                pending.pop(item.name, None)
            else:
                pending[item.name] = previous
        return undo

    return _Prepared(item.name, apply, state=_DEFERRED,
                     note="deferred: the function is not defined in this process yet; "
                          "its new source is swapped in when it is")


def apply_deferred_source(record: ParamRecord, version: int, source: str) -> str | None:
    """Swap in source that arrived before `record`'s function existed; None, or why it did not fit.

    Called by `tracer.params` when it registers the function. Never raises:
    the patch was acknowledged already, and the program must run on.
    """
    try:
        replace_source(record, source, version=version)
    except PatchRejected as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - a broken patch must not reach the program
        return f"{type(exc).__name__}: {exc}"
    return None


def _prepare_value(record: ParamRecord, value: Any, version: int) -> _Prepared:
    try:
        new = params.coerce_value(record.value, value, name=record.name)
    except ParamTypeError as exc:
        raise PatchRejected(str(exc)) from None

    def apply() -> Callable[[], None]:
        _remember_original(record)
        before = (record.value, record.version, record.patched)
        record.set(new, version=version)

        def undo() -> None:
            record.set(before[0])
            record.value, record.version, record.patched = before
        return undo

    return _Prepared(record.name, apply, state=new)


def _prepare_source(record: ParamRecord, source: str, version: int) -> _Prepared:
    func = record.function()
    if func is None:
        raise PatchRejected(f"function {record.name!r} no longer exists in this process")
    name = func.__code__.co_name
    try:
        signature = record.signature or signature_of(func)
        check_function_source(source, name=name, signature=signature, freevars=record.freevars)
    except SourceRejected as exc:
        raise PatchRejected(exc.reason) from None
    except (ValueError, TypeError) as exc:  # the signature itself is unreadable
        raise PatchRejected(f"cannot check the signature of {record.name!r}: {exc}") from None
    text = textwrap.dedent(source)
    if not text.endswith("\n"):
        text += "\n"
    filename = patch_filename(version, record.name)
    code, doc = _compile_in_place(func, text, filename)
    original = _histories[record.name].original.code if record.name in _histories else func.__code__
    _check_compatible(func, code, original)
    code, note = _instrument(code, record)
    state = _SourceState(text, code, doc)
    return _Prepared(record.name, lambda: _swap_source(record, func, state, version, filename), state=state, note=note)


def _compile_in_place(func: FunctionType, text: str, filename: str) -> tuple[CodeType, str | None]:
    """Compile `text` nested as `func` is, and return its code object and docstring."""
    node = parse_function_source(text, name=func.__code__.co_name)
    module = scoped_module(node, qualname=func.__qualname__, freevars=func.__code__.co_freevars)
    try:
        compiled = compile(module, filename, "exec", flags=func.__code__.co_flags & _FUTURE_FLAGS, dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f"line {line}: " if line else ""
        raise PatchRejected(f"does not compile: {where}{getattr(exc, 'msg', None) or exc}") from None
    except RecursionError:
        raise PatchRejected("does not compile: nested too deeply") from None
    try:
        code = find_nested_code(compiled, func.__qualname__)
    except LookupError as exc:  # cannot happen for a qualname scoped_module built
        raise PatchRejected(f"compiled, but the function's code was not found: {exc}") from None
    return code, ast.get_docstring(node, clean=False)


def _check_compatible(func: FunctionType, new: CodeType, original: CodeType) -> None:
    old = func.__code__
    if new.co_freevars != old.co_freevars:
        raise PatchRejected(
            f"uses free variables {sorted(new.co_freevars)} but the original closure has {sorted(old.co_freevars)}"
        )
    if new.co_flags & _KIND_FLAGS != old.co_flags & _KIND_FLAGS:
        was = _KIND_NAMES.get(old.co_flags & _KIND_FLAGS, "another kind of function")
        now = _KIND_NAMES.get(new.co_flags & _KIND_FLAGS, "another kind of function")
        raise PatchRejected(f"the original is {was}; the new source makes {now} (keep yield/async as they were)")
    known = set(func.__globals__) | set(vars(builtins)) | _global_names(original) | _global_names(old)
    unknown = sorted(_global_names(new) - known)
    if unknown:
        closure = f" or the free variables {list(old.co_freevars)} of the closure" if old.co_freevars else ""
        raise PatchRejected(
            f"uses names {unknown} that are not defined in module {func.__module__!r}, builtins{closure}"
        )


def _global_names(code: CodeType) -> set[str]:
    """Names a code object (and the code nested in it) looks up as globals."""
    names: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        for instr in dis.get_instructions(current):
            if instr.opname in ("LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"):
                value = instr.argval
                names.add(value[-1] if isinstance(value, tuple) else value)
        pending.extend(c for c in current.co_consts if isinstance(c, CodeType))
    return {n for n in names if not n.startswith("@")}


def _instrument(code: CodeType, record: ParamRecord) -> tuple[CodeType, str | None]:
    marking = params._marking()
    instrument = getattr(marking, "instrument_code", None) if marking is not None else None
    if instrument is None:
        return code, "applied uninstrumented: tracer.marking is not available, so this function is no longer traced"
    func = record.function()
    try:
        install = getattr(marking, "install_hook_globals", None)
        if install is not None and func is not None:
            install(func.__globals__)  # the hooks instrumented code calls live in its globals
        instrumented = instrument(code, module=record.module, trainable=True,
                                  qualname=func.__qualname__ if func is not None else None)
    except Exception as exc:
        raise PatchRejected(f"could not be instrumented for tracing: {type(exc).__name__}: {exc}") from None
    if not isinstance(instrumented, CodeType) or instrumented.co_freevars != code.co_freevars:
        raise PatchRejected("instrumentation changed the function's closure; not swapped")
    return instrumented, None


def _prepare_restore(record: ParamRecord, state: Any, version: int) -> _Prepared:
    if record.kind != KIND_SOURCE:
        return _prepare_value(record, state, version)
    func = record.function()
    if func is None:
        raise PatchRejected(f"function {record.name!r} no longer exists in this process")
    filename = state.code.co_filename
    return _Prepared(record.name, lambda: _swap_source(record, func, state, version, filename), state=state)


# -- applying -----------------------------------------------------------------------


def _swap_source(record: ParamRecord, func: FunctionType, state: _SourceState, version: int | None,
                 filename: str) -> Callable[[], None]:
    _remember_original(record)
    old_code = func.__code__
    targets = [func] + [f for f in _functions_sharing(old_code) if f is not func]
    before = [(f, f.__code__, f.__doc__) for f in targets]
    before_record = (record.value, record.version, record.patched)
    if filename.startswith("<"):
        linecache.cache[filename] = (len(state.source), None, state.source.splitlines(True), filename)
    for f in targets:
        f.__code__ = state.code
        f.__doc__ = state.doc
    factory_undo = _swap_in_factory(func, old_code, state.code)
    record.value = state.source
    record.patched = True
    if version is not None:
        record.version = version
    params.registry.generation += 1

    def undo() -> None:
        factory_undo()
        for f, code, doc in before:
            f.__code__, f.__doc__ = code, doc
        record.value, record.version, record.patched = before_record
    return undo


def _swap_in_factory(func: FunctionType, old: CodeType, new: CodeType) -> Callable[[], None]:
    """Make closures created from now on use `new` too; return the undo.

    A nested function's code is a constant of the enclosing function's code:
    the outermost enclosing function (found from the module by qualname) gets
    a copy of its code with the constant replaced along the qualname. Without
    an enclosing function that can be found, only existing closures change.
    """
    qualname = func.__qualname__
    if "<locals>" not in qualname:
        return lambda: None
    top_qualname, _, rest = qualname.partition(".<locals>.")
    top = params._resolve_qualname(func.__globals__, top_qualname)
    top = getattr(top, "__func__", top)
    while top is not None and not isinstance(top, FunctionType):
        top = getattr(top, "__wrapped__", None)
    if top is None:
        return lambda: None
    path = [part for part in rest.split(".") if part != "<locals>"]
    replaced = _replace_nested(top.__code__, path, old, new)
    if replaced is None:
        return lambda: None
    previous = top.__code__
    top.__code__ = replaced

    def undo() -> None:
        if top.__code__ is replaced:
            top.__code__ = previous
    return undo


def _replace_nested(code: CodeType, path: list[str], old: CodeType, new: CodeType) -> CodeType | None:
    """`code` with the code constant at `path` (co_names) replaced by `new`, or None if not found."""
    name, rest = path[0], path[1:]
    consts = list(code.co_consts)
    for index, const in enumerate(consts):
        if not isinstance(const, CodeType) or const.co_name != name:
            continue
        if rest:
            inner = _replace_nested(const, rest, old, new)
            if inner is None:
                continue
            consts[index] = inner
        else:
            if const.co_freevars != new.co_freevars:
                continue
            consts[index] = new
        return code.replace(co_consts=tuple(consts))
    return None


def _functions_sharing(code: CodeType) -> list[FunctionType]:
    """Other live functions made from the same `def` (closures of one factory)."""
    return [f for f in gc.get_referrers(code) if isinstance(f, FunctionType) and f.__code__ is code]


def _apply_all(prepared: list[_Prepared]) -> tuple[str | None, str]:
    """Apply in order; on the first failure undo the applied ones, return (name, reason)."""
    undo: list[Callable[[], None]] = []
    for item in prepared:
        try:
            undo.append(item.apply())
        except Exception as exc:
            for restore in reversed(undo):
                try:
                    restore()
                except Exception:
                    pass  # keep undoing the rest; the first error is what to report
            reason = exc.reason if isinstance(exc, PatchRejected) else f"{type(exc).__name__}: {exc}"
            return item.name, reason
    return None, ""


def _all_failed(items: list, failed_name: str, reason: str) -> list[m.PatchResult]:
    return [
        m.PatchResult(name=item.name, ok=False, error=reason if item.name == failed_name
                      else f"not applied: {failed_name!r} in the same patch failed ({reason})")
        for item in items
    ]


def _remember_original(record: ParamRecord) -> None:
    if record.name in _histories:
        return
    if record.kind == KIND_SOURCE:
        func = record.function()
        assert func is not None
        original: Any = _SourceState(record.value, func.__code__, func.__doc__)
    else:
        original = record.value
    _histories[record.name] = _History(original)


def _plain(state: Any) -> Any:
    return state.source if isinstance(state, _SourceState) else state
