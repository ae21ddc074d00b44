"""`trace-run`: run an unmodified Python program with its marked functions traced.

    trace-run [options] script.py [args...]
    trace-run [options] -m module [args...]

Options come before the program; everything after the script (or the
module) is the program's own arguments, passed through untouched. The
marking configuration is merged from these flags, TRACE_* environment
variables and `[tool.trace]` in the nearest pyproject.toml (see
`tracer.config`). The exit status is the program's.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings

# (flag, takes a value) for splitting trace-run's options from the program's arguments
_OPTIONS_WITH_VALUE = {"--session", "--target", "--trainable", "--param", "--granularity", "--llm"}
_USAGE = "trace-run [options] script.py [args...] | trace-run [options] -m module [args...]"


class UsageError(Exception):
    """The command line is malformed; the message says how to fix it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trace-run",
        usage=_USAGE,
        description="Run a Python program with the functions named by --target/--trainable traced, "
        "and optimised live by the trace daemon.",
        epilog="Lists may also be comma-separated (--target 'app:f,app:g'). Flags add to TRACE_TARGETS etc. "
        "and to [tool.trace] in pyproject.toml; single values given here override them.",
    )
    parser.add_argument("--session", metavar="NAME", help="session name shared by the processes that optimise together")
    parser.add_argument("--target", action="append", default=[], metavar="MOD:QUALNAME",
                        help="trace this function (MOD:* traces every function and method defined in MOD; __main__ is the program)")
    parser.add_argument("--trainable", action="append", default=[], metavar="MOD:QUALNAME",
                        help="trace this function and let the optimizer rewrite its source")
    parser.add_argument("--param", action="append", default=[], metavar="MOD:NAME",
                        help="a module global (MOD:NAME) or class attribute (MOD:Class.attr) the optimizer may change")
    parser.add_argument("--granularity", choices=("call", "op"), help="one node per marked call, or per operation inside them")
    parser.add_argument("--llm", metavar="PROVIDER:MODEL", help="e.g. openai:gpt-4o-mini or anthropic:claude-3-5-haiku-latest")
    parser.add_argument("--in-process", action="store_true", default=None, help="run the optimizer in a thread of this process, no daemon")
    parser.add_argument("--no-autostart", dest="autostart", action="store_false", default=None,
                        help="do not start the daemon if none is running (trace locally, send nothing)")
    parser.add_argument("--show-config", action="store_true", help="print the merged configuration and where each setting came from, then exit")
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    return parser


def split_command_line(argv: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split argv into (trace-run options, script, module, program arguments).

    The first argument that is not an option (or the one after -m) ends
    trace-run's options, so the program's own flags are never parsed here.
    """
    options: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if arg == "-m":
            if index + 1 >= len(argv):
                raise UsageError("-m needs a module name: trace-run [options] -m module [args...]")
            return options, None, argv[index + 1], argv[index + 2:]
        if arg.startswith("-m") and not arg.startswith("--"):
            return options, None, arg[2:], argv[index + 1:]  # -mpkg.mod, like python
        if not arg.startswith("-") or arg == "-":
            break
        options.append(arg)
        if arg in _OPTIONS_WITH_VALUE:
            if index + 1 >= len(argv):
                raise UsageError(f"{arg} needs a value")
            options.append(argv[index + 1])
            index += 1
        index += 1
    if index >= len(argv):
        return options, None, None, []
    return options, argv[index], None, argv[index + 1:]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `trace-run`; returns the program's exit status (SystemExit from the program propagates)."""
    from tracer import config as trace_config

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        option_args, script, module, program_args = split_command_line(argv)
    except UsageError as exc:
        parser.error(str(exc))
    options = parser.parse_args(option_args)
    if script is None and module is None and not options.show_config:
        parser.error("no program to run: give a script path or -m module")

    start_dir = os.path.dirname(os.path.abspath(script)) if script else os.getcwd()
    flags = {
        "session": options.session,
        "targets": options.target,
        "trainable": options.trainable,
        "params": options.param,
        "granularity": options.granularity,
        "llm": options.llm,
        "in_process": options.in_process,
        "autostart": options.autostart,
    }
    try:
        config = trace_config.resolve(flags, start_dir=start_dir)
    except trace_config.ConfigError as exc:
        print(f"trace-run: error: {exc}", file=sys.stderr)
        return 2
    if config.session is None and (script or module):
        # Name the session once, here: children (multiprocessing runs them as `python -c ...`)
        # would otherwise each derive another name and optimise apart from this process.
        name = module if module is not None else os.path.splitext(os.path.basename(script))[0]
        config = dataclasses.replace(config, session=name, origins={**config.origins, "session": "program name"})
    if options.show_config:
        _print_config(config)
        return 0

    if script is not None and not os.path.exists(script):
        # before any tracing starts (which may start a daemon): a typo costs nothing
        print(f"{sys.executable}: can't open file {os.path.abspath(script)!r}: [Errno 2] No such file or directory",
              file=sys.stderr)
        return 2

    from tracer import import_hook, runner

    # Children (multiprocessing spawn, subprocess of python) trace with the same config.
    os.environ.update(trace_config.child_environ(config))
    import_hook.install(config)
    _start_runtime(config)
    try:
        if module is not None:
            return runner.run_module(module, program_args, config)
        return runner.run_path(script, program_args, config)
    except runner.ProgramNotFound as exc:
        print(f"{sys.executable}: {exc}", file=sys.stderr)
        return 1 if module is not None else 2


def _start_runtime(config) -> None:
    """Start tracing (buffers, flusher, daemon connection); the program runs even if this fails."""
    try:
        from tracer import runtime
    except ImportError:
        return  # tracing without a runtime: functions are instrumented, events stay in the buffers
    overrides = {}
    if config.in_process:
        factory = _in_process_service_factory()
        if factory is not None:
            overrides["service_factory"] = factory
    try:
        runtime.start(config, **overrides)
    except Exception as exc:
        warnings.warn(f"trace-run: tracing runtime did not start ({exc!r}); the program runs untraced", RuntimeWarning, stacklevel=2)
        return
    service = getattr(runtime.current(), "service", None) if overrides else None
    if service is not None:
        # Child processes join this process's optimizer instead of starting their own.
        from tracer.config import ENV

        os.environ["TRACE_DAEMON_SOCKET"] = service.socket_path
        os.environ[ENV["in_process"]] = "0"
        os.environ[ENV["autostart"]] = "0"


def _in_process_service_factory():
    """The optimizer service to run inside this process (`--in-process`), or None (with a warning) if unavailable."""
    try:
        from optimizer_service.in_process import start_in_process
    except ImportError as exc:
        warnings.warn(
            f"trace-run: --in-process is not available in this installation ({exc}); using the daemon instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return start_in_process


def _print_config(config) -> None:
    for name in ("session", "targets", "trainable", "params", "granularity", "llm", "in_process", "autostart"):
        value = getattr(config, name)
        if isinstance(value, tuple):
            value = ", ".join(value) or "-"
        origin = config.origins.get(name, "default")
        print(f"{name:12} {value}    ({origin})")
    print(f"{'hash':12} {config.stable_hash()}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
