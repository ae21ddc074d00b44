"""Run a script or a module as `__main__`, exactly as `python script.py` / `python -m mod` would.

Modelled on coverage.py's `execfile.PyRunner`: `sys.argv` and `sys.path[0]`
are set before anything of the program is imported, a fresh `__main__`
module replaces the runner's in `sys.modules` (so pickling classes defined
in the script works), the code is compiled with `dont_inherit=True` (the
runner's `from __future__` imports must not leak into the program), its
marked functions are rewritten before it runs, `SystemExit` propagates
unchanged, and an uncaught exception is reported through `sys.excepthook`
with the runner's own frames cut from the traceback.
"""
from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import os
import signal
import sys
import types

from tracer import import_hook
from tracer.config import TraceConfig


class ProgramNotFound(Exception):
    """The script file or module to run does not exist or cannot be run; the message says which and why."""


def run_path(path: str, args: list[str], config: TraceConfig) -> int:
    """Run the script at `path` with `sys.argv = [path, *args]`; return its exit status.

    SystemExit raised by the program propagates to the caller unchanged.
    """
    if os.path.isdir(path):
        # `python DIR` imports DIR/__main__.py as module "__main__" (with a spec) from DIR.
        _set_path0(path)
        spec = importlib.machinery.PathFinder.find_spec("__main__", [path])
        if spec is None or spec.origin is None:
            raise ProgramNotFound(f"can't find '__main__' module in {os.path.abspath(path)!r}")
        return _run_main(spec.origin, [path, *args], config, spec=spec, module_names=("__main__",))
    if not os.path.exists(path):
        raise ProgramNotFound(f"can't open file {os.path.abspath(path)!r}: [Errno 2] No such file or directory")
    # Like CPython: sys.path[0] is the directory of the script, symlinks resolved.
    _set_path0(os.path.dirname(os.path.realpath(path)))
    # __file__ and code filenames are absolute (as since 3.9); sys.argv[0] stays as typed.
    return _run_main(os.path.abspath(path), [path, *args], config, spec=None, module_names=("__main__",))


def run_module(module_name: str, args: list[str], config: TraceConfig) -> int:
    """Run `module_name` like `python -m module_name` (packages run their `__main__`); return the exit status."""
    _set_path0(os.getcwd())
    sys.argv = ["-m", *args]  # what `python -m` shows while the module's parent packages import
    try:
        spec = importlib.util.find_spec(module_name)
        if spec is not None and spec.submodule_search_locations is not None:
            module_name = f"{module_name}.__main__"
            spec = importlib.util.find_spec(module_name)
    except ImportError as exc:
        raise ProgramNotFound(f"Error while finding module specification for {module_name!r} ({type(exc).__name__}: {exc})") from None
    if spec is None or spec.loader is None:
        raise ProgramNotFound(f"No module named {module_name}")
    if spec.origin is None or not spec.has_location:
        raise ProgramNotFound(f"{module_name!r} has no file to run")
    # A marked `-m pkg.mod` matches targets named after either of its names.
    return _run_main(spec.origin, [spec.origin, *args], config, spec=spec, module_names=("__main__", module_name))


def _set_path0(directory: str) -> None:
    if getattr(sys.flags, "safe_path", False):
        return  # python -P / PYTHONSAFEPATH: no script directory on sys.path
    # sys.path[0] is trace-run's own bin directory at this point; the program expects its own.
    if sys.path:
        sys.path[0] = directory
    else:
        sys.path.insert(0, directory)


def _run_main(filename: str, argv: list[str], config: TraceConfig, *, spec, module_names) -> int:
    main = types.ModuleType("__main__")
    main.__file__ = filename
    main.__builtins__ = builtins
    main.__cached__ = None
    main.__annotations__ = {}  # CPython's startup __main__ has one, and `python -m` runs in that namespace
    if spec is not None:
        main.__spec__ = spec
        main.__loader__ = spec.loader
        main.__package__ = spec.parent
        main.__cached__ = spec.cached
    else:
        main.__spec__ = None
        main.__loader__ = importlib.machinery.SourceFileLoader("__main__", filename)
        main.__package__ = None
    sys.argv = argv
    old_main = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        code = _compile_main(filename, spec)
    except SyntaxError as exc:
        _report_uncaught(exc)  # no frames left: just the error and its caret, like python
        return 1
    marks = config.marks_for(*module_names)
    code, marked, _failed = import_hook.instrument_module_code(code, marks, "__main__", config.granularity)
    if marked:
        import_hook._install_hook_globals(main.__dict__)
        import_hook.bind_when_defined(main.__dict__, "__main__", marked)
    param_specs = config.params_for(*module_names)
    # The script's body is the whole program, so "after it ran" is too late for
    # what the session learned: its --param globals are declared (taking a
    # catch-up value) right where they are assigned, and its trainable
    # functions get deferred new source right where they are defined.
    trainable_names = import_hook.trainable_top_level_names(marked)
    if param_specs or trainable_names:
        code = import_hook.insert_store_hooks(code, param_specs, trainable_names)
        import_hook.install_store_hook(main.__dict__)
    try:
        _exec_program(code, main.__dict__, marked, param_specs)
    except SystemExit:
        raise
    except BaseException as exc:
        _report_uncaught(exc)
        if isinstance(exc, KeyboardInterrupt):
            _die_of_sigint()
        return 1
    finally:
        # keep the runner's own module alive: functions of trace-run's __main__ may still be on the stack
        _keep_alive.append(old_main)
    return 0


_keep_alive: list = []


def _compile_main(filename: str, spec) -> types.CodeType:
    loader = getattr(spec, "loader", None)
    if spec is not None and not isinstance(loader, importlib.machinery.SourceFileLoader):
        code = loader.get_code(spec.name)  # sourceless (.pyc only) modules: run what the loader has
        if code is None:
            raise ProgramNotFound(f"No code object available for {spec.name}")
        return code
    with open(filename, "rb") as f:
        source = f.read()
    # bytes let compile() honour a PEP 263 coding cookie and a BOM, like the interpreter does
    return compile(source, filename, "exec", dont_inherit=True)


def _exec_program(code: types.CodeType, namespace: dict, marked, param_specs) -> None:
    # instrument_code already registered the marked __main__ functions (by
    # code) before the body runs; their function objects, and globals named
    # by --param, exist only once the body has run, so they are bound here.
    try:
        exec(code, namespace)
    finally:
        if marked:
            import_hook.register_marked_functions(namespace, "__main__", marked)
        if param_specs:
            import_hook.register_config_params(namespace, param_specs)


def _report_uncaught(exc: BaseException) -> None:
    # Cut this module's frames (and trace-run's above them) from the front of
    # the traceback so the user sees their program's frames only, as with python.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    exc.__traceback__ = tb
    sys.excepthook(type(exc), exc, tb)


def _die_of_sigint() -> None:
    # CPython exits "killed by SIGINT" after an uncaught KeyboardInterrupt, so shells see 130.
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


__all__ = ["ProgramNotFound", "run_module", "run_path"]
