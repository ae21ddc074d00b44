"""The import hook: rewrite the marked functions of a module before it runs, with an on-disk cache.

Modelled on pytest's assertion rewriting (`_pytest/assertion/rewrite.py`):

- `TraceFinder` sits first on `sys.meta_path`. For a module that has no
  marked target it returns None after one set lookup on the module *name*, so
  the normal machinery imports it untouched (same code object as a plain
  import). For a marked module it asks `PathFinder` for the spec and swaps in
  `TraceLoader`.
- `TraceLoader` compiles the source, replaces only the marked functions' code
  objects inside the module code object (`marking.instrument_code`), injects
  the `__@trace_*` hook globals before the module body runs, and registers the
  marked function objects afterwards.
- Rewritten module code is cached next to the normal pyc under its own tag
  (`mod.cpython-312-trace1.pyc`), so the normal loader never picks it up. The
  cache key covers the source (mtime and size), the marks of this module, the
  granularity, the interpreter's magic number and the tracer's own code.
  Writes go to a temporary file and `os.replace`; a read-only directory or
  `sys.dont_write_bytecode` just means no cache.

Modules already imported when the hook is installed get their marked
functions instrumented in place (`marking.instrument_function`), with one
`ImportedBeforeHookWarning` per module.

A process that joins a session holds the session's latest values before
any module runs (deferred in `tracer.params`, as no parameter exists yet).
So that a module's own import-time code already sees them, each
module-level assignment of a `--param` name is followed by a call of the
store hook (`insert_store_hooks`, `after_store`): it declares the parameter
right there, which puts the deferred value in place for the next line. The
definition of a trainable function is followed by the same call, which
swaps in new source that arrived before the function existed. Only modules
a `--param` or a mark names are rewritten (and cached); the rest keep their
normal pyc. The runner does the same for the script it runs as `__main__`.

The hook names are also put into `builtins`, so rewritten code that runs in
a namespace this loader never prepared (runpy, multiprocessing's spawn of a
`-m` program) still finds them. `call_on_first_use` lets the child bootstrap
start the runtime only once marked code is about to run.

Nothing here raises into the user's program: a function the rewriter cannot
handle is left untraced, with a `TracingDisabledWarning`.
"""
from __future__ import annotations

import builtins
import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import struct
import sys
import threading
import types
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

from tracer.config import ModuleMarks, TraceConfig

CACHE_FORMAT = 1  # bump when the cache file layout or the meaning of its contents changes
CACHE_TAG = f"{sys.implementation.cache_tag}-trace{CACHE_FORMAT}"
_HEADER = struct.Struct("<4s4s16sqQ")  # b"TRCE", importlib magic, key digest, source mtime_ns, source size
_HEADER_MAGIC = b"TRCE"
_CO_NEWLOCALS = 0x2  # set on function code objects, absent on module and class bodies


class ImportedBeforeHookWarning(UserWarning):
    """A marked module was imported before the hook; its functions were instrumented in place instead."""


class TracingDisabledWarning(UserWarning):
    """A marked function could not be instrumented; it runs untraced."""


class ConfigParamWarning(UserWarning):
    """A parameter named by configuration (`--param`) does not exist where it was looked for."""


@dataclass
class HookStats:
    """What the hook did in this process (read by tests and benchmarks/bench_import.py)."""

    rewrites: int = 0  # modules compiled and rewritten (cache misses)
    cache_hits: int = 0
    cache_writes: int = 0
    cache_write_failures: int = 0
    instrumented_in_place: int = 0  # functions of modules imported before the hook
    failures: list[str] = field(default_factory=list)  # "module:qualname: reason"


stats = HookStats()
_finder: "TraceFinder | None" = None
_warned_modules: set[str] = set()
_first_use_callbacks: list = []
_first_use_lock = threading.Lock()


def call_on_first_use(callback) -> None:
    """Run `callback()` once, just before this process first runs or instruments code the config names.

    The child bootstrap starts the tracing runtime this way, so a Python
    child that never touches marked code (a helper script, pip) pays no
    connection and prints nothing. Exceptions from the callback are reported
    as warnings, never raised into the import.
    """
    _first_use_callbacks.append(callback)


def _first_use() -> None:
    if not _first_use_callbacks:
        return
    with _first_use_lock:
        callbacks = list(_first_use_callbacks)
        _first_use_callbacks.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception as exc:
            warnings.warn(f"tracer: starting the runtime failed ({exc!r}); the program runs untraced", RuntimeWarning, stacklevel=2)


# -- installing ----------------------------------------------------------------


def install(config: TraceConfig) -> "TraceFinder | None":
    """Put the finder for `config` first on sys.meta_path (replacing an earlier one) and return it.

    Also instruments, in place, the marked functions of modules that are
    already imported (except `__main__`, which the runner rewrites itself).
    Returns None and warns if the rewriter cannot be loaded; the program then
    runs untraced.
    """
    global _finder
    uninstall()
    if not config.hooked_modules():
        return None
    try:
        # Import the rewriter (and `bytecode`) now, before the hook is live, so
        # rewriting a module can never re-enter the hook through its own imports.
        from tracer import marking  # noqa: F401
    except Exception as exc:  # pragma: no cover - only when the rewriter is broken or missing
        warnings.warn(f"tracer: cannot load the rewriter ({exc!r}); the program runs untraced", TracingDisabledWarning, stacklevel=2)
        return None
    marking.set_granularity(config.granularity)  # also for functions registered from the cache
    # Rewritten code can also run in a namespace this hook never saw: runpy.run_module
    # (multiprocessing's spawn of a `-m` program), exec of a loader's get_code(). The
    # hook names start with "@", so they can never shadow a user's builtins.
    marking.install_hook_globals(builtins.__dict__)
    install_store_hook(builtins.__dict__)
    tracer_fingerprint()  # computed once here rather than inside the first marked import
    _finder = TraceFinder(config)
    sys.meta_path.insert(0, _finder)
    for name in sorted(config.hooked_modules()):
        module = sys.modules.get(name)
        if module is not None and name != "__main__":
            _first_use()
            _instrument_imported_module(module, config.marks_for(name))
            register_config_params(module.__dict__, config.params_for(name))
    return _finder


def uninstall() -> None:
    """Remove the finder installed by `install` (already rewritten modules stay rewritten)."""
    global _finder
    if _finder is not None:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None


def installed_finder() -> "TraceFinder | None":
    """The finder currently installed by `install`, if any."""
    return _finder


class TraceFinder:
    """Meta-path finder that hands marked source modules to `TraceLoader` and ignores everything else.

    (Not derived from importlib.abc.MetaPathFinder: importing importlib.abc
    costs every traced child process ~10 ms, and find_spec is all that is used.)
    """

    def __init__(self, config: TraceConfig):
        self.config = config
        self.hooked_modules = config.hooked_modules()

    def find_spec(self, fullname: str, path: Any = None, target: types.ModuleType | None = None):
        if fullname not in self.hooked_modules:
            return None  # the cheap bail-out: most imports end here
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None:
            spec = self._find_with_other_finders(fullname, path, target)  # e.g. setuptools' editable installs
        if spec is None:
            return None
        if not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            if fullname not in _warned_modules:  # extension, namespace or sourceless: nothing to rewrite
                _warned_modules.add(fullname)
                warnings.warn(
                    f"tracer: module {fullname!r} is not Python source ({type(spec.loader).__name__}); "
                    "its targets cannot be traced",
                    TracingDisabledWarning,
                    stacklevel=2,
                )
            return None
        spec.loader = TraceLoader(
            fullname, spec.origin, self.config.marks_for(fullname), self.config.granularity, self.config.params_for(fullname)
        )
        return spec


    def _find_with_other_finders(self, fullname: str, path: Any, target: types.ModuleType | None):
        for finder in list(sys.meta_path):
            if finder is self or finder is importlib.machinery.PathFinder:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            try:
                spec = find_spec(fullname, path, target)
            except Exception:  # another finder's failure is its own business when it runs for real
                continue
            if spec is not None:
                return spec
        return None


# -- the loader ----------------------------------------------------------------


# `TraceLoader.exec_module`, compiled under importlib's own file name on purpose.
# When a module body raises, CPython cuts the import machinery's frames from
# the traceback (import.c, remove_importlib_frames), but only a run of
# importlib frames that is unbroken and ends in `_call_with_frames_removed`.
# A loader frame of ours in that run would leave four frames of
# `<frozen importlib._bootstrap>` plus our own in the user's traceback; with
# this the traceback of an error at import time is the same as without tracing.
_EXEC_MODULE_SOURCE = """
def exec_module(self, module):
    code = self._before_exec(module)
    try:
        _call_with_frames_removed(exec, code, module.__dict__)
    finally:
        self._after_exec(module)

def _call_with_frames_removed(f, *args, **kwds):
    return f(*args, **kwds)
"""
_exec_namespace: dict = {}
exec(compile(_EXEC_MODULE_SOURCE, "<frozen importlib._bootstrap_external>", "exec"), _exec_namespace)
_exec_module_without_visible_frames = _exec_namespace["exec_module"]


class TraceLoader(importlib.machinery.SourceFileLoader):
    """Source loader that rewrites the marked functions of one module (through the cache)."""

    def __init__(self, fullname: str, path: str, marks: ModuleMarks | None, granularity: str, params=()):
        super().__init__(fullname, path)
        self.marks = marks
        self.granularity = granularity
        self.params = list(params)
        self.marked: tuple = ()

    def get_code(self, fullname: str) -> types.CodeType:
        if self.marks is None and not self.params:  # pragma: no cover - the finder only hooks modules the config names
            self.marked = ()
            return super().get_code(fullname)
        source_path = self.get_filename(fullname)
        code, self.marked = load_rewritten_code(
            source_path, fullname, self.marks, self.granularity, self.get_data, params=self.params
        )
        return code

    def _before_exec(self, module: types.ModuleType) -> types.CodeType:
        _first_use()
        code = self.get_code(module.__name__)
        if self.marked:
            _install_hook_globals(module.__dict__)
            if _deferred_sources_pending():
                # New source arrived for functions of this module: let the store hooks
                # find them as soon as the body defines them (before import-time calls).
                bind_when_defined(module.__dict__, module.__name__, self.marked)
        if self.params or self.marked:
            install_store_hook(module.__dict__)
        return code

    def _after_exec(self, module: types.ModuleType) -> None:
        register_marked_functions(module.__dict__, module.__name__, self.marked)
        register_config_params(module.__dict__, self.params)
        if self.marked:
            _apply_deferred_sources()

    exec_module = _exec_module_without_visible_frames  # (self, module): before, run the body, after


def load_rewritten_code(source_path, module_name, marks, granularity, read_bytes=None, params=()):
    """The rewritten code of `source_path` and its marked functions, from the cache if valid.

    The marked functions come as ((qualname, trainable, sites, argnames), ...);
    `register_marked_functions` registers them (with their function objects)
    once the module body has run, whether the code came from the cache or not.
    `params` are the module's `--param` specs: the module-level assignments
    of their names, and the definitions of its trainable functions, are
    followed by a call of the store hook (`insert_store_hooks`). Compiles
    and rewrites on a miss and refreshes the cache when it can.
    """
    read_bytes = read_bytes or _read_file
    stat = os.stat(source_path)  # before reading: a concurrent edit then leaves a stale mtime, never stale code
    key = _cache_key(module_name, marks, granularity, params)
    cache_path = cache_location(source_path)
    if cache_path is not None:
        cached = _read_cache(cache_path, key, stat)
        if cached is not None:
            code, marked, failed = cached
            stats.cache_hits += 1
            for qualname, message, filename, lineno in failed:  # the same warnings as when it was rewritten
                _warn_failure(module_name, qualname, message, filename, lineno)
            return code, marked
    source = read_bytes(source_path)
    code = compile(source, source_path, "exec", dont_inherit=True)
    code, marked, failed = instrument_module_code(code, marks, module_name, granularity)
    if params or marked:
        code = insert_store_hooks(code, params, trainable_top_level_names(marked))
    stats.rewrites += 1
    if cache_path is not None and not sys.dont_write_bytecode:
        _write_cache(cache_path, key, stat, (code, marked, failed))
    return code, marked


# -- rewriting the marked code objects -----------------------------------------


def instrument_module_code(code: types.CodeType, marks: ModuleMarks | None, module_name: str, granularity: str):
    """Rewrite the marked functions' code objects inside a module code object.

    Returns (new module code, ((qualname, trainable, sites, argnames), ...),
    ((qualname, reason, filename, line), ...) of the functions the rewriter
    refused, which run untraced after a warning); `sites` are the op-mode
    sites the rewriter registered for the function. Unmarked code objects
    are kept as they are (the same objects).
    """
    if marks is None:
        return code, (), ()
    from tracer import marking
    from tracer.ids import function_id

    marked: list[tuple[str, bool]] = []
    failed: list[tuple[str, str, str, int]] = []

    def rewrite(container: types.CodeType, prefix: str, in_function: bool) -> types.CodeType:
        consts = list(container.co_consts)
        changed = False
        for index, const in enumerate(consts):
            if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
                continue  # lambdas and comprehensions belong to their enclosing function
            qualname = _qualname(const, prefix, in_function)
            is_function = bool(const.co_flags & _CO_NEWLOCALS)
            trainable = marks.trainable(qualname) if is_function else None
            if trainable is not None:
                try:
                    new = marking.instrument_code(
                        const, module=module_name, trainable=trainable, qualname=qualname, granularity=granularity
                    )
                except Exception as exc:  # the rewriter refused: run this function untraced
                    failure = (qualname, str(exc) or type(exc).__name__, const.co_filename, const.co_firstlineno)
                    failed.append(failure)
                    _warn_failure(module_name, *failure)
                    continue
                entry = marking.registry.get(function_id(module_name, qualname))
                sites = dict(entry.sites) if entry is not None else {}
                argnames = tuple(entry.argnames) if entry is not None else ()
                marked.append((qualname, trainable, sites, argnames))
            elif marks.wants_nested(qualname):
                new = rewrite(const, qualname, is_function)
            else:
                continue
            if new is not const:
                consts[index] = new
                changed = True
        return container.replace(co_consts=tuple(consts)) if changed else container

    return rewrite(code, "", False), tuple(marked), tuple(failed)


def _qualname(code: types.CodeType, prefix: str, parent_is_function: bool) -> str:
    qualname = getattr(code, "co_qualname", None)  # 3.11+
    if qualname is not None:
        return qualname
    if not prefix:
        return code.co_name
    return f"{prefix}.<locals>.{code.co_name}" if parent_is_function else f"{prefix}.{code.co_name}"


def _warn_failure(module_name: str, qualname: str, reason: str, filename: str, lineno: int) -> None:
    stats.failures.append(f"{module_name}:{qualname}: {reason}")
    # Attributed to the function's own source line: that is what the user can look at.
    warnings.warn_explicit(
        f"tracer: cannot instrument {module_name}:{qualname} ({reason}); it runs untraced",
        TracingDisabledWarning,
        filename,
        lineno,
        module=module_name,
    )


def _install_hook_globals(namespace: dict) -> None:
    from tracer import marking

    marking.install_hook_globals(namespace)


# -- registering and in-place instrumentation ----------------------------------


def _deferred_sources_pending() -> bool:
    # No patch arrived if tracer.params was never imported, or is still being
    # imported (it may import a marked module itself: no registry yet).
    registry = getattr(sys.modules.get("tracer.params"), "registry", None)
    return registry is not None and bool(registry.deferred_sources)


def trainable_top_level_names(marked) -> list[str]:
    """The module-level names that hold the trainable functions of `marked` (a method's class name)."""
    return sorted({qualname.split(".")[0] for qualname, trainable, _sites, _argnames in marked
                   if trainable and "<locals>" not in qualname})


def _apply_deferred_sources() -> None:
    # A process that joined a session may hold new source for functions of a
    # module it had not imported yet (the patcher defers it). Swap it in now,
    # before the importer's first call, not at the flusher's next cycle.
    if _deferred_sources_pending():
        sys.modules["tracer.params"].registry.records()  # registers the new functions, swaps deferred sources in


def register_marked_functions(namespace: dict, module_name: str, marked) -> int:
    """Register `marked` ((qualname, trainable, sites, argnames), ...) with `marking.registry`; return how many
    function objects were found in `namespace`.

    Every marked function gets an entry (its op-mode sites and argument names
    included, as `instrument_code` made them, so code from the cache is
    described exactly like freshly rewritten code); the function object is
    bound when it exists. Functions nested in other functions
    (`f.<locals>.g`) do not exist yet and stay unbound.
    """
    if not marked:
        return 0
    from tracer import marking
    from tracer.ids import function_id

    granularity = marking.get_granularity()
    count = 0
    for qualname, trainable, sites, argnames in marked:  # a property's getter and setter share a qualname
        func_id = function_id(module_name, qualname)
        funcs = list(_functions_named(namespace, qualname)) or [None]
        for func in funcs:
            # registry.add merges into an existing entry. Going through it rather than
            # marking.register_function keeps the rewriter (and `bytecode`) unimported
            # on a cache hit, which would otherwise dominate the import.
            try:
                marking.registry.add(marking.MarkedFunction(
                    func_id, module_name, qualname, weakref.ref(func) if func is not None else None, trainable,
                    granularity, argnames=tuple(argnames), sites=dict(sites),
                ))
            except Exception as exc:  # registration is bookkeeping; the function still runs
                stats.failures.append(f"{module_name}:{qualname}: register: {exc!r}")
                continue
            count += func is not None
    return count


class _FunctionInNamespace:
    """A `MarkedFunction.func` for a function that does not exist yet: finds it by qualname when asked.

    Used for `__main__`, whose body is the whole program: its marked
    functions must be reachable (e.g. by the patcher, for trainable ones)
    while the body still runs, long before "after exec". Lookups are a few
    dict reads; once found, the function is held weakly like any other.
    """

    __slots__ = ("namespace", "qualname", "_ref")

    def __init__(self, namespace: dict, qualname: str):
        self.namespace = namespace
        self.qualname = qualname
        self._ref: Any = None

    def __call__(self) -> types.FunctionType | None:
        if self._ref is not None:
            func = self._ref()
            if func is not None:
                return func
        for func in _functions_named(self.namespace, self.qualname):
            self._ref = weakref.ref(func)
            return func
        return None


def bind_when_defined(namespace: dict, module_name: str, marked) -> None:
    """Register the marked functions of a module whose body is about to run so they resolve as soon as they exist."""
    if not marked:
        return
    from tracer import marking
    from tracer.ids import function_id

    granularity = marking.get_granularity()
    for qualname, trainable, _sites, _argnames in marked:
        if "<locals>" in qualname:
            continue
        marking.registry.add(marking.MarkedFunction(
            function_id(module_name, qualname), module_name, qualname,
            _FunctionInNamespace(namespace, qualname), trainable, granularity,
        ))


def register_config_params(namespace: dict, specs) -> int:
    """Declare the `--param MOD:NAME` / `MOD:Class.attr` specs found in `namespace` as parameters; return how many.

    A spec that names nothing (a typo, a name defined later) is reported
    with a `ConfigParamWarning`; the program runs on.
    """
    if not specs:
        return 0
    from tracer import params

    count = 0
    for spec in specs:
        try:
            params.register_config_param(spec, namespace=namespace)
            count += 1
        except Exception as exc:
            warnings.warn_explicit(
                f"tracer: --param {spec} was not declared: {exc}",
                ConfigParamWarning,
                namespace.get("__file__") or spec.split(":", 1)[0],
                0,
                module=namespace.get("__name__", "?"),
            )
    return count


# -- store hooks: a joining process's parameters in place before the module uses them --

STORE_HOOK = "__@trace_stored"  # the global the rewritten module code calls after a store


def insert_store_hooks(code: types.CodeType, param_specs=(), function_names=()) -> types.CodeType:
    """`code` (a module body) with a call of the store hook right after each module-level store of a name it watches.

    Watched are the top-level names of `param_specs` (``MOD:NAME`` watches
    NAME, ``MOD:Class.attr`` watches Class) and `function_names`. After
    ``NAME = ...`` the rewritten body runs
    ``__@trace_stored("NAME", (specs of NAME, ...), defines_marked_function)``,
    which declares the parameters there and then (so a catch-up value the
    session sent is in place for the body's next line) and swaps in deferred
    new source of marked functions. Only STORE_NAME / STORE_GLOBAL of the
    module code object itself are followed: functions and class bodies are
    untouched. The result is marshallable (names and constants only). Returns
    `code` itself when it stores none of the names.
    """
    specs_by_name: dict[str, list[str]] = {}
    for spec in param_specs:
        target = spec.partition(":")[2]
        if target:
            specs_by_name.setdefault(target.split(".")[0], []).append(spec)
    functions = set(function_names)
    watched = set(specs_by_name) | functions
    if not watched or not any(
        name in watched for name in code.co_names
    ):
        return code
    try:
        return _insert_store_hooks(code, specs_by_name, functions)
    except Exception as exc:  # the module still runs; its parameters are declared once it has run
        stats.failures.append(f"{code.co_filename}: store hooks: {exc!r}")
        warnings.warn_explicit(
            f"tracer: cannot watch the assignments of {sorted(watched)} ({exc!r}); values the session learned "
            "for them take effect only once the module has run",
            TracingDisabledWarning, code.co_filename, code.co_firstlineno,
        )
        return code


def _insert_store_hooks(code: types.CodeType, specs_by_name: dict, functions: set) -> types.CodeType:
    from bytecode import Instr

    from tracer.rewrite import compat

    watched = set(specs_by_name) | functions
    bc = compat.bytecode_from_code(code)
    items: list = []
    inserted = 0
    for item in bc:
        items.append(item)
        if isinstance(item, Instr) and item.name in ("STORE_NAME", "STORE_GLOBAL") and item.arg in watched:
            name = item.arg
            loc = item.location
            items += compat.push_hook(STORE_HOOK, loc)
            items += [
                compat.load_const(name, loc),
                compat.load_const(tuple(specs_by_name.get(name, ())), loc),
                compat.load_const(name in functions, loc),
            ]
            items += compat.call(3, loc)
            items.append(Instr("POP_TOP", location=loc) if loc is not None else Instr("POP_TOP"))
            inserted += 1
    if not inserted:
        return code
    bc[:] = items
    try_begins = [item for item in items if type(item).__name__ == "TryBegin"]
    # The call sequence leaves the stack as it found it, so the depths of the
    # module's try regions stay what the compiler made them.
    return compat.bytecode_to_code(bc, try_begins)


def install_store_hook(namespace: dict) -> None:
    """Put the store hook that `insert_store_hooks` code calls into `namespace` (a module's, or builtins)."""
    namespace[STORE_HOOK] = after_store


def after_store(name: str, specs: tuple, defines_marked_function: bool) -> None:
    """Called by rewritten module code right after it assigned the global `name`; never raises.

    Declares the `--param` specs that live at `name` in the caller's module
    namespace (a deferred catch-up value replaces the assigned one), and, if
    `name` holds a marked function, swaps in new source the session sent
    before the function existed. A spec that fails here is reported when the
    module has run (`register_config_params`), once.
    """
    try:
        namespace = sys._getframe(1).f_globals  # the module body that just stored `name`
        if specs:
            _declare_stored_params(namespace, name, specs)
        if defines_marked_function:
            _apply_deferred_sources()
    except Exception as exc:  # bookkeeping must never break the program
        stats.failures.append(f"store hook {name}: {exc!r}")


def _declare_stored_params(namespace: dict, name: str, specs: tuple) -> None:
    from tracer import params

    for spec in specs:
        target = spec.partition(":")[2]
        # A class attribute's record is named Class.attr; declaring it again only re-finds it.
        record = None if "." in target else params.registry.by_name.get(f"{params.stable_module_name(namespace)}.{target}")
        if record is None:
            try:
                params.register_config_param(spec, namespace=namespace)
            except Exception:
                pass  # e.g. a function under a --param name: reported once the module has run
            continue
        if record.kind == params.KIND_GLOBAL and name in namespace and namespace[name] is not record.value:
            # The body assigned the parameter again (TEMPLATE = TEMPLATE.strip()):
            # the record follows, as declaring after the body ran would have seen it.
            with params.registry.lock:
                value = params.unshared_copy(namespace[name])
                namespace[name] = value
                record.value = value


def _functions_named(namespace: dict, qualname: str) -> Iterator[types.FunctionType]:
    """The plain functions reachable as `qualname` from a module namespace (unwrapping decorators)."""
    parts = qualname.split(".")
    if "<locals>" in parts:
        return
    holder: Any = namespace.get(parts[0])
    for part in parts[1:]:
        holder = vars(holder).get(part) if isinstance(holder, type) else None
        if holder is None:
            return
    seen: set[int] = set()
    for func in _unwrap(holder):
        if func.__qualname__ == qualname and id(func) not in seen:
            seen.add(id(func))
            yield func


def _unwrap(obj: Any, depth: int = 0) -> Iterator[types.FunctionType]:
    if depth > 8 or obj is None:
        return
    if isinstance(obj, types.FunctionType):
        yield obj
        wrapped = obj.__dict__.get("__wrapped__")
        if wrapped is not None:
            yield from _unwrap(wrapped, depth + 1)
    elif isinstance(obj, (classmethod, staticmethod)):
        yield from _unwrap(obj.__func__, depth + 1)
    elif isinstance(obj, property):
        for accessor in (obj.fget, obj.fset, obj.fdel):
            yield from _unwrap(accessor, depth + 1)
    else:
        try:  # read the instance dict directly: never trigger a user's __getattr__ or descriptors
            wrapped = object.__getattribute__(obj, "__dict__").get("__wrapped__")
        except Exception:
            wrapped = None
        if wrapped is not None:
            yield from _unwrap(wrapped, depth + 1)


def _defined_functions(module: types.ModuleType, marks: ModuleMarks) -> Iterator[tuple[str, types.FunctionType]]:
    """(qualname, function) for every marked function object defined in an already imported module."""
    namespace = vars(module)
    names = set(marks.qualnames)
    if marks.wildcard:
        names.update(_wildcard_qualnames(namespace, module.__name__))
    for qualname in sorted(names):
        for func in _functions_named(namespace, qualname):
            if func.__module__ == module.__name__:
                yield qualname, func


def _wildcard_qualnames(namespace: dict, module_name: str) -> set[str]:
    found: set[str] = set()
    stack: list[tuple[str, dict]] = [("", namespace)]
    while stack:
        prefix, mapping = stack.pop()
        for name, value in list(mapping.items()):
            qualname = f"{prefix}{name}"
            if isinstance(value, type):
                if value.__module__ == module_name and value.__qualname__ == qualname:
                    stack.append((qualname + ".", dict(vars(value))))
                continue
            for func in _unwrap(value):
                if func.__module__ == module_name and func.__qualname__ == qualname:
                    found.add(qualname)
    return found


def _instrument_imported_module(module: types.ModuleType, marks: ModuleMarks | None) -> int:
    """Instrument the marked functions of an already imported module in place; warn once. Returns how many."""
    if marks is None:
        return 0
    return instrument_in_place(module, marks, warn=True)


def instrument_in_place(module: types.ModuleType, marks: ModuleMarks, *, warn: bool) -> int:
    """Instrument (and so register) the marked functions of a live module with `marking.instrument_function`."""
    from tracer import marking

    _first_use()
    count = 0
    for qualname, func in _defined_functions(module, marks):
        trainable = marks.trainable(qualname)
        try:
            marking.instrument_function(func, trainable=bool(trainable))
        except Exception as exc:
            code = getattr(func, "__code__", None)
            _warn_failure(module.__name__, qualname, str(exc), getattr(code, "co_filename", "?"), getattr(code, "co_firstlineno", 0))
            continue
        count += 1
    stats.instrumented_in_place += count
    if warn and module.__name__ not in _warned_modules:
        _warned_modules.add(module.__name__)
        warnings.warn_explicit(
            f"tracer: module {module.__name__!r} was already imported when the import hook was installed "
            f"(by the interpreter's startup, the tracer itself, or the program); its {count} marked function(s) "
            "were instrumented in place instead, so code that already ran was not traced",
            ImportedBeforeHookWarning,
            getattr(module, "__file__", None) or module.__name__,
            0,
            module=module.__name__,
        )
    return count


# -- the cache -------------------------------------------------------------------


def cache_location(source_path: str) -> str | None:
    """Where the rewritten code of `source_path` is cached (honours sys.pycache_prefix and -O), or None."""
    try:
        normal = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None  # no cache_tag on this interpreter
    head, tail = os.path.split(normal)
    tag = sys.implementation.cache_tag
    stem, sep, rest = tail.rpartition(f".{tag}")
    if not sep:
        return None
    return os.path.join(head, f"{stem}.{CACHE_TAG}{rest}")


_fingerprint: bytes | None = None
_fingerprint_lock = threading.Lock()


# The tracer's files whose changes change rewritten code (the rest, e.g. the runtime, do not).
_REWRITING_FILES = ("import_hook.py", "config.py", "marking.py", "hooks.py", "op_hooks.py", "hook_table.py", "ids.py")
_REWRITING_DIRS = ("rewrite",)


def tracer_fingerprint() -> bytes:
    """Digest of the tracer code that produces rewritten code (paths, sizes, mtimes).

    Any edit or upgrade of the rewriter, the hooks or this file invalidates
    every cached module, as a new pytest version invalidates its pycs.
    """
    global _fingerprint
    with _fingerprint_lock:
        if _fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            package_dir = os.path.dirname(os.path.abspath(__file__))
            paths = [os.path.join(package_dir, name) for name in _REWRITING_FILES]
            for directory in _REWRITING_DIRS:
                try:
                    names = sorted(os.listdir(os.path.join(package_dir, directory)))
                except OSError:
                    continue
                paths.extend(os.path.join(package_dir, directory, n) for n in names if n.endswith(".py"))
            for path in paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                digest.update(f"{os.path.relpath(path, package_dir)}:{st.st_size}:{st.st_mtime_ns};".encode())
            _fingerprint = digest.digest()
        return _fingerprint


def _cache_key(module_name: str, marks: ModuleMarks | None, granularity: str, params=()) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(importlib.util.MAGIC_NUMBER)
    digest.update(tracer_fingerprint())
    digest.update(f"|{module_name}|{granularity}|{marks.key() if marks else ''}".encode())
    digest.update(f"|{sorted(params)!r}".encode())  # the store hooks follow the --param names
    return digest.digest()


def _read_cache(path: str, key: bytes, stat: os.stat_result):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < _HEADER.size:
        return None
    magic, py_magic, cached_key, mtime_ns, size = _HEADER.unpack_from(data)
    if (magic, py_magic, cached_key, mtime_ns, size) != (
        _HEADER_MAGIC, importlib.util.MAGIC_NUMBER, key, stat.st_mtime_ns, stat.st_size
    ):
        return None
    try:
        code, marked, failed = marshal.loads(data[_HEADER.size:])
    except Exception:  # truncated or corrupt: rewrite and overwrite it
        return None
    if not isinstance(code, types.CodeType) or not isinstance(marked, tuple) or not isinstance(failed, tuple):
        return None
    return code, marked, failed


def _write_cache(path: str, key: bytes, stat: os.stat_result, contents: tuple) -> None:
    """Write (module code, marked, failed) for `path`'s source, atomically; failures only cost the cache."""
    try:
        payload = marshal.dumps(contents)
    except ValueError as exc:  # the rewriter left an unmarshallable constant: still run, just uncached
        stats.cache_write_failures += 1
        stats.failures.append(f"cache: {path}: {exc!r}")
        return
    header = _HEADER.pack(_HEADER_MAGIC, importlib.util.MAGIC_NUMBER, key, stat.st_mtime_ns, stat.st_size)
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temp, "wb") as f:
            f.write(header + payload)
        os.replace(temp, path)  # atomic: readers see the old file or the new one, never half of one
    except OSError:
        # read-only directory, full disk, ...: the module still runs, only uncached
        stats.cache_write_failures += 1
        try:
            os.unlink(temp)
        except OSError:
            pass
        return
    stats.cache_writes += 1


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


__all__ = [
    "CACHE_TAG",
    "ConfigParamWarning",
    "HookStats",
    "ImportedBeforeHookWarning",
    "TraceFinder",
    "TraceLoader",
    "TracingDisabledWarning",
    "cache_location",
    "STORE_HOOK",
    "bind_when_defined",
    "call_on_first_use",
    "install",
    "installed_finder",
    "instrument_in_place",
    "insert_store_hooks",
    "install_store_hook",
    "instrument_module_code",
    "load_rewritten_code",
    "register_config_params",
    "register_marked_functions",
    "stats",
    "tracer_fingerprint",
    "trainable_top_level_names",
    "uninstall",
]
