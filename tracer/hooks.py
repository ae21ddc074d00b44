"""The hot path of call mode: functions that instrumented code calls.

Rewritten code reaches these through module globals named `__@trace_<name>`
(see `tracer.hook_table`), never through code constants, so rewritten code
objects stay marshallable. Every hook appends at most one tuple to the
calling thread's buffer (`tracer.buffers`) and returns; none of them
summarises a value, calls a user dunder or raises (internal errors are
counted in `errors()`). Only KeyboardInterrupt and SystemExit, which a
signal handler may raise at any instruction, are let through: swallowing
them would make Ctrl-C stop working.

Per-frame state is a *token* created by `enter` and kept at the bottom of
the instrumented frame's value stack (invisible to `locals()` and to the
function's own code): `[op_id, saved_parent_token, frame_state, thread_state]`.
The token of the innermost running marked call is "current" (per thread on
3.11+, per asyncio context on 3.10, see `_IN_CONTEXTVAR`); generators and
coroutines give it back at every suspension and take it again on resume, so
nesting is right across threads, asyncio tasks and generators.

Raw records (tuples, first item is the tag) consumed by
`tracer.provenance.Resolver`:

    ("call", op, func_id, parent_op, args_tuple, t_ns)    (the thread is the buffer's)
    ("ret",  op, value, t_ns)
    ("exc",  op, exception, traceback, t_ns)
    ("read", op, name, value)                             (a global, attribute or closure variable)

Op mode (`tracer.op_hooks`) builds on the same tokens and thread state.
"""
from __future__ import annotations

import contextlib
import itertools
import sys
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any, Iterator, Optional

from tracer import buffers

_tls = buffers._tls
_new_thread_state = buffers._new_thread_state

# Where the token of the innermost running marked call lives.
# 3.11+: in the thread's state list. Every suspension point of a marked frame
#   (yield, and the yield inside `await` / `yield from`) runs a hook that
#   gives the slot back to the resumer, so interleaved asyncio tasks and
#   generators on one thread never see each other's calls.
# 3.10: YIELD_FROM (await) suspends without a hook point, so the token lives
#   in a ContextVar instead: every asyncio task runs in its own context.
_IN_CONTEXTVAR = sys.version_info < (3, 11)
_current: ContextVar[Optional[list]] = ContextVar("trace_current_call", default=None)
_next_op = itertools.count(1).__next__

_enabled = True
_errors = 0


def enable() -> None:
    """Turn tracing on process-wide (the default)."""
    global _enabled
    _enabled = True


def disable() -> None:
    """Turn tracing off process-wide: hooks return at once, calls already running finish quietly."""
    global _enabled
    _enabled = False


def is_enabled() -> bool:
    return _enabled


def errors() -> int:
    """How many internal hook errors were swallowed (a non-zero value is a tracer bug)."""
    return _errors


def _count_error() -> None:
    # A RecursionError raised inside a hook means the program itself is at
    # the recursion limit: not a tracer bug, so not counted.
    global _errors
    if not isinstance(sys.exc_info()[1], RecursionError):
        _errors += 1


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Nothing the current thread runs inside this block is traced."""
    with buffers.suppressed():
        yield


def _state() -> list:
    try:
        return _tls.state
    except AttributeError:
        return _new_thread_state()


def _get_current(ts: list) -> Optional[list]:
    return _current.get() if _IN_CONTEXTVAR else ts[1]


def _set_current(ts: list, tok: Optional[list]) -> None:
    if _IN_CONTEXTVAR:
        _current.set(tok)
    else:
        ts[1] = tok


def current_op() -> Optional[int]:
    """Op id of the innermost marked call running here (this thread / task), or None."""
    tok = _get_current(_state())
    return tok[0] if tok is not None else None


def _buffer() -> Optional[list]:
    return _state()[0]


# --- call mode -------------------------------------------------------------
#
# A token is [op id, parent token (the resumer's, for generators), op-mode
# FrameState or None, the thread state it was entered / last resumed in].


def _restore_parent(tok: list) -> None:
    """The frame of `tok` stops being the current call: its resumer's call is current again.

    Only if it still is current: an exception thrown into a suspended
    generator (`close()`, `throw()`, garbage collection, task cancellation)
    leaves it without a resume hook, and then the current call is the
    thrower's, left as is.
    """
    if _IN_CONTEXTVAR:
        if _current.get() is tok:
            _current.set(tok[1])
    else:
        ts = tok[3]
        if ts[1] is tok:
            ts[1] = tok[1]


def enter(func_id: int, *args: Any) -> Optional[list]:
    """A marked function starts running; returns the frame's token (or None: not traced)."""
    if not _enabled:
        return None
    try:
        try:
            ts = _tls.state
        except AttributeError:
            ts = _new_thread_state()
        buf = ts[0]
        if buf is None:
            return None
        if _IN_CONTEXTVAR:
            parent = _current.get()
            while parent is not None and len(parent) > 4 and parent[4].f_back is None:
                # 3.10: a generator suspended inside `yield from` left itself
                # current (no hook runs there); a suspended frame is not a caller
                parent = parent[1]
            tok = [_next_op(), parent, None, ts]
            _current.set(tok)
        else:
            parent = ts[1]
            tok = ts[1] = [_next_op(), parent, None, ts]
        buf.append(("call", tok[0], func_id, parent[0] if parent is not None else None,
                    args, perf_counter_ns()))
        if len(buf) > buffers._limit:
            buffers.overflow(buf)
        return tok
    except Exception:
        _count_error()
        return None


def gen_enter(func_id: int, *args: Any) -> Optional[list]:
    """`enter` for a generator on 3.10: the token also holds the generator's frame.

    A suspended generator's frame has no `f_back`; `enter` uses that to skip
    a generator that suspended inside `yield from` without giving the
    current-call slot back (3.10's YIELD_FROM has no hook point).
    """
    tok = enter(func_id, *args)
    if tok is not None:
        try:
            tok.append(sys._getframe(1))
        except Exception:
            _count_error()
    return tok


def leave(tok: Optional[list], value: Any) -> Any:
    """A marked call returns `value` (passed through unchanged)."""
    if tok is not None:
        try:
            ts = tok[3]
            if _IN_CONTEXTVAR:
                if _current.get() is tok:
                    _current.set(tok[1])
            elif ts[1] is tok:
                ts[1] = tok[1]
            buf = ts[0]
            if buf is not None:
                buf.append(("ret", tok[0], value, perf_counter_ns()))
                if len(buf) > buffers._limit:
                    buffers.overflow(buf)
        except Exception:
            _count_error()
    return value


def gen_leave(tok: Optional[list], value: Any) -> Any:
    """A marked generator/coroutine finishes with `value` (a `ret` only if it is not None)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            if value is not None:
                buf = tok[3][0]
                if buf is not None:
                    buf.append(("ret", tok[0], value, perf_counter_ns()))
                    if len(buf) > buffers._limit:
                        buffers.overflow(buf)
        except Exception:
            _count_error()
    return value


def fail(tok: Optional[list], exc: Optional[BaseException] = None) -> None:
    """An exception is leaving a marked call (3.10 passes no exception: it is the handled one)."""
    if tok is None:
        return
    try:
        _restore_parent(tok)
        if exc is None:
            exc = sys.exc_info()[1]
        if isinstance(exc, GeneratorExit) or exc is None:
            return  # a generator being closed is not an error
        buf = tok[3][0]
        if buf is not None:
            buf.append(("exc", tok[0], exc, exc.__traceback__, perf_counter_ns()))
            if len(buf) > buffers._limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()


def suspend(tok: Optional[list], value: Any) -> Any:
    """A marked generator yields `value` to its consumer (recorded as a `ret`)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            buf = tok[3][0]
            if buf is not None:
                buf.append(("ret", tok[0], value, perf_counter_ns()))
                if len(buf) > buffers._limit:
                    buffers.overflow(buf)
        except Exception:
            _count_error()
    return value


def pause(tok: Optional[list], value: Any) -> Any:
    """A marked generator/coroutine suspends inside `yield from` / `await`; `value` passes through."""
    if tok is not None:
        try:
            _restore_parent(tok)
        except Exception:
            _count_error()
    return value


def resume(tok: Optional[list]) -> None:
    """A marked generator was resumed (maybe in another thread): it is the current call again."""
    if tok is not None:
        try:
            ts = _state()
            current = _get_current(ts)
            if current is tok:
                return  # 3.10: after `yield from` in a frame that never stopped being current
            tok[3] = ts
            tok[1] = current
            _set_current(ts, tok)
        except Exception:
            _count_error()


def read(tok: Optional[list], value: Any, key: Any) -> Any:
    """A name that may be a parameter was loaded inside a marked call; `value` passes through.

    `key` is `(module, name)` for a global, `".name"` for an attribute. The
    read is recorded only when the name is a registered parameter AND the
    loaded object is that parameter's current value (name first, identity
    second: never identity alone).
    """
    if tok is None:
        return value
    try:
        params = _params_registry()
        if params is None:
            return value
        if type(key) is tuple:
            rec = params.by_global.get(key)
            if rec is None or rec.get() is not value:
                return value
        else:
            recs = params.by_attr.get(key[1:])
            if not recs:
                return value
            for rec in recs:
                if rec.get() is value:
                    break
            else:
                return value
        buf = tok[3][0]
        if buf is not None:
            buf.append(("read", tok[0], rec.name, value))
    except Exception:
        _count_error()
    return value


def read_cell(tok: Optional[list], value: Any, key: tuple) -> Any:
    """A closure variable was loaded inside a marked call; `value` passes through.

    `key` is `(module, qualname of the reading function, variable)`, the key
    of `params.registry.by_closure`. Recorded, like `read`, only when the
    variable is a registered parameter AND `value` is its current value.
    """
    if tok is None:
        return value
    try:
        params = _params_registry()
        if params is None:
            return value
        recs = params.by_closure.get(key)
        if not recs:
            return value  # the common case: a closure variable that is no parameter
        rec = _closure_param(recs, value)
        if rec is None:
            return value
        buf = tok[3][0]
        if buf is not None:
            buf.append(("read", tok[0], rec.name, value))
    except Exception:
        _count_error()
    return value


def _closure_param(recs: Optional[list], value: Any) -> Any:
    """The one parameter of a closure variable whose current value is `value`, else None.

    Runs of one function may declare different parameters in the same
    variable; a shared object (3, None) that is the value of two of them
    cannot say which one was read, so it is none of them.
    """
    if not recs:
        return None
    found = None
    for rec in recs:
        if rec.get() is value:
            if found is not None:
                return None
            found = rec
    return found


_params_module = None


def _params_registry():
    """`tracer.params.registry` once that module is imported (it is optional), else None."""
    global _params_module
    module = _params_module
    if module is None:
        module = sys.modules.get("tracer.params")
        if module is None:
            return None
        _params_module = module
    return getattr(module, "registry", None)
