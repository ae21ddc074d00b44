"""Run one corpus program as __main__, with every function in it instrumented.

    python run_instrumented.py MODE PROGRAM [ARGS...]     MODE: none | call | op

`none` runs the program exactly the same way without instrumentation, so
the two outputs can be compared byte for byte. When $CORPUS_STATS names a
file, a JSON object is written there at exit: hook errors, records
produced, wire events the resolver made of them, resolver errors.
"""
import builtins
import json
import os
import sys
import types

CO_NEWLOCALS = 0x2


def instrument_all(code, module, prefix, in_function):
    """Instrument every function code object nested in `code` (inner ones first)."""
    from tracer import marking

    consts = list(code.co_consts)
    for i, const in enumerate(consts):
        if isinstance(const, types.CodeType):
            qualname = getattr(const, "co_qualname", None)
            if qualname is None:  # 3.10
                qualname = (f"{prefix}.<locals>.{const.co_name}" if in_function else
                            f"{prefix}.{const.co_name}" if prefix else const.co_name)
            is_function = bool(const.co_flags & CO_NEWLOCALS)
            new = instrument_all(const, module, qualname, is_function)
            if is_function:
                new = marking.instrument_code(new, module=module, qualname=qualname)
            consts[i] = new
    return code.replace(co_consts=tuple(consts))


def write_stats(path):
    from tracer import buffers, hooks, provenance

    records = [r for _, chunk in buffers.drain() for r in chunk]
    stats = {"hook_errors": hooks.errors(), "records": len(records), "events": 0,
             "resolver_error": None, "tags": {}}
    try:
        resolver = provenance.Resolver()
        events = resolver.convert([(0, records)])
        stats["events"] = len(events)
        stats["resolver_errors"] = resolver.errors
        for event in events:
            stats["tags"][event[0]] = stats["tags"].get(event[0], 0) + 1
        resolver.release()
    except Exception as exc:  # reported, the test fails on it
        stats["resolver_error"] = f"{type(exc).__name__}: {exc}"
    with open(path, "w") as f:
        json.dump(stats, f)


def main():
    mode, path = sys.argv[1], sys.argv[2]
    sys.argv = [path] + sys.argv[3:]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        source = f.read()
    code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    if mode != "none":
        from tracer import marking
        marking.set_granularity(mode)
        code = instrument_all(code, "__main__", "", False)
        marking.install_hook_globals(module.__dict__)
    try:
        exec(code, module.__dict__)
    finally:
        sys.stdout.flush()
        stats_path = os.environ.get("CORPUS_STATS")
        if stats_path and mode != "none":
            write_stats(stats_path)


if __name__ == "__main__":
    main()
