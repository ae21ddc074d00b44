"""Trace child Python processes of a `trace-run` program (multiprocessing spawn, subprocess of python).

`trace-run` puts this directory first on PYTHONPATH and the resolved
configuration in TRACE_* variables, so every child interpreter imports this
module at startup (through `site`). It installs the import hook with that
configuration, starts the tracing runtime, then runs the user's own
`sitecustomize` if there is one, as `ddtrace-run` does. This directory is
removed from `sys.path` again, so the program sees the path it would without
the tracer. Nothing here may stop the child from running: any failure leaves
the child untraced, with one warning.

Any Python on the machine may import this file (a child can run another
interpreter with the same environment), so it is kept to syntax that even
Python 2.7 parses, and does nothing where the tracer is not installed.
"""
import os
import sys

_BOOTSTRAP_DIR = os.path.dirname(os.path.abspath(__file__))


def _trace_this_process():
    try:
        from tracer import import_hook
        from tracer.config import TraceConfig
    except ImportError:
        return  # an interpreter without the tracer installed (another venv, another version): run untraced, quietly
    import warnings

    try:
        config = TraceConfig.from_environ()
        # Start the runtime (connection, flusher) only once marked code is about to run:
        # a child that never imports it (a helper script, pip) costs little and prints nothing.
        import_hook.call_on_first_use(lambda: _start_runtime(config))
        import_hook.install(config)
        if config.marks_for("__main__") is not None or config.params_for("__main__"):
            # spawn children say --multiprocessing-fork; forkserver children are forked
            # from a `python -c` server that prepares __main__ the same way, so patch always.
            _trace_spawned_main(config)
    except Exception as exc:  # never break the child: it runs untraced
        warnings.warn("tracer: this child process runs untraced (%r)" % (exc,), RuntimeWarning, stacklevel=1)


def _start_runtime(config):
    try:
        from tracer import runtime
    except ImportError:
        return
    # The trace-run parent already told the user if tracing is off; a child
    # repeating it would change what the program's children print.
    runtime.start(config, announce_off=False)


def _trace_spawned_main(config):
    # A multiprocessing spawn child re-runs the parent's script as __mp_main__
    # through runpy, outside the import system, so the hook never sees it:
    # instrument its marked functions in place once it has run.
    import multiprocessing.spawn as spawn

    from tracer import import_hook

    marks = config.marks_for("__main__")
    param_specs = config.params_for("__main__")

    def traced(fixup):
        def fixup_then_instrument(*args, **kwargs):
            result = fixup(*args, **kwargs)
            module = sys.modules.get("__mp_main__")
            if module is not None:
                if marks is not None:
                    import_hook.instrument_in_place(module, marks, warn=False)
                import_hook.register_config_params(module.__dict__, param_specs)
            return result

        return fixup_then_instrument

    spawn._fixup_main_from_path = traced(spawn._fixup_main_from_path)
    spawn._fixup_main_from_name = traced(spawn._fixup_main_from_name)


def _chain_user_sitecustomize():
    # Hide this directory and this module, import whatever `sitecustomize` the
    # rest of sys.path provides, and leave sys.path as the user would have it.
    this = sys.modules.pop("sitecustomize", None)
    while _BOOTSTRAP_DIR in sys.path:
        sys.path.remove(_BOOTSTRAP_DIR)
    try:
        import sitecustomize  # noqa: F401  (the user's, if any)
    except ImportError as exc:
        if getattr(exc, "name", None) not in (None, "sitecustomize"):
            raise  # the user's sitecustomize itself failed: show it, as python would
        if this is not None:
            sys.modules["sitecustomize"] = this


_trace_this_process()
_chain_user_sitecustomize()
