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
from typing import Any, Iterator, Optional, Union

from tracer import buffers

Token = Union[tuple, list]  # see "tokens" below

_tls = buffers._tls
_new_thread_state = buffers._new_thread_state

# Where the token of the innermost running marked call lives.
#
# 3.11+: in the thread's state list (slot 1), for every kind of function.
#   Every suspension point of a marked frame (yield, and the yield inside
#   `await` / `yield from`) runs a hook that gives the slot back to the
#   resumer, so interleaved asyncio tasks and generators on one thread never
#   see each other's calls.
# 3.10: YIELD_FROM (await) suspends without a hook point, so a generator or
#   coroutine can stay "current" while it is suspended. Their tokens (frame
#   tokens) live in a ContextVar, which every asyncio task has its own copy
#   of, and are skipped while their frame is suspended. Plain functions
#   cannot suspend: their tokens stay in the thread slot, as on 3.11+, which
#   is what keeps the traced call cheap (a ContextVar.set allocates; two per
#   call tripled its cost). The innermost of the two is found by
#   `_innermost` (see there).
_IN_CONTEXTVAR = sys.version_info < (3, 11)
_current: ContextVar[Optional[Token]] = ContextVar("trace_current_call", default=None)
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


# --- tokens ------------------------------------------------------------------
#
# A token holds, in its first four items, the same everywhere:
#   [op id, caller token (for generators: the resumer's), op-mode FrameState
#    or None, the thread state it was entered / last resumed in]
# A plain function's token is a tuple (never changed once made, and cheaper
# to build than a list); a generator's is a list, which `resume` updates.
# A plain function's token then has the buffer its call was recorded in
# (item 4): the return half of a call-mode trace is inline bytecode that
# appends the `ret` record there (`compat.inline_leave_and_return`).
# On 3.10 (see `_IN_CONTEXTVAR`) every token has 7 items:
#   plain functions: [..., buffer, previous thread-slot token, running frame token at entry]
#   frame tokens:    [..., previous ContextVar token, the frame, FRAME]
FRAME = "frame"


def _is_frame_token(tok: Token) -> bool:
    return tok[6] is FRAME


def _running_frame_token() -> Optional[Token]:
    """3.10: the innermost generator/coroutine token whose frame is running, or None.

    A frame suspended inside `yield from` / `await` left its token current
    (no hook runs there); a suspended frame has no `f_back`, so it is
    skipped for the token that was current before it.
    """
    tok = _current.get()
    while tok is not None and tok[5].f_back is None:
        tok = tok[4]
    return tok


def _pick_caller(sync: Optional[Token], frame: Optional[Token]) -> Optional[Token]:
    """3.10: the inner one of the running plain function `sync` and generator `frame` (see `_innermost`)."""
    if frame is None or (sync is not None and sync[6] is frame):
        return sync
    return frame


def _innermost(ts: list) -> Optional[Token]:
    """The token of the innermost marked call running on this thread (this task), or None.

    3.10: the thread slot holds the innermost running plain function S, the
    ContextVar the innermost running generator/coroutine F. S started inside
    F exactly when F is still the frame token S saw at its entry; otherwise
    F was activated (or resumed without a hook, inside `yield from`) after S
    started, so F is the inner one.
    """
    if not _IN_CONTEXTVAR:
        return ts[1]
    return _pick_caller(ts[1], _running_frame_token())


def _push_call(ts: list, op: int, state: Any) -> Token:
    """A plain function's token, made the current call (non-hot paths: op mode)."""
    sync = ts[1]
    if _IN_CONTEXTVAR:
        frame = _running_frame_token()
        tok = (op, _pick_caller(sync, frame), state, ts, ts[0], sync, frame)
    else:
        tok = (op, sync, state, ts, ts[0])
    ts[1] = tok
    return tok


def _push_frame(ts: list, op: int, state: Any, frame: Any) -> list:
    """A generator's / coroutine's token, made the current call."""
    if _IN_CONTEXTVAR:
        running = _running_frame_token()
        tok = [op, _pick_caller(ts[1], running), state, ts, running, frame, FRAME]
        _current.set(tok)
    else:
        tok = [op, ts[1], state, ts]
        ts[1] = tok
    return tok


def current_op() -> Optional[int]:
    """Op id of the innermost marked call running here (this thread / task), or None."""
    tok = _innermost(_state())
    return tok[0] if tok is not None else None


def _restore_parent(tok: Token) -> None:
    """The frame of `tok` stops being the current call: what was current before it is again.

    Only if it still is current: an exception thrown into a suspended
    generator (`close()`, `throw()`, garbage collection, task cancellation)
    leaves it without a resume hook, and then the current call is the
    thrower's, left as is.
    """
    if not _IN_CONTEXTVAR:
        ts = tok[3]
        if ts[1] is tok:
            ts[1] = tok[1]
    elif _is_frame_token(tok):
        if _current.get() is tok:
            _current.set(tok[4])
    else:
        ts = tok[3]
        if ts[1] is tok:
            ts[1] = tok[5]


# --- call mode ---------------------------------------------------------------
#
# `enter` is most of the cost of a traced plain call (its return half is
# inline, see the token layout above): it is written out per version (no
# shared helpers, no version test at run time), takes no timestamp and checks
# the buffer bound (a call appends two records; the flusher drains every few ms).

if _IN_CONTEXTVAR:
    def enter(func_id: int, args: tuple) -> Optional[Token]:
        """A marked plain function starts running; returns the frame's token (or None: not traced)."""
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
            if len(buf) >= buffers._limit:
                # before the token becomes current: a handler that raises
                # (KeyboardInterrupt) must not leave it current
                buffers.overflow(buf)
            sync = ts[1]
            # `_running_frame_token` and `_pick_caller`, written out (hot path)
            frame = _current.get()
            while frame is not None and frame[5].f_back is None:
                frame = frame[4]
            caller = sync if frame is None or (sync is not None and sync[6] is frame) else frame
            op = _next_op()
            ts[1] = tok = (op, caller, None, ts, buf, sync, frame)
            buf.append(("call", op, func_id, None if caller is None else caller[0], args))
            return tok
        except Exception:
            _count_error()
            return None
else:
    def enter(func_id: int, args: tuple) -> Optional[Token]:
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
            if len(buf) >= buffers._limit:
                # before the token becomes current: a handler that raises
                # (KeyboardInterrupt) must not leave it current
                buffers.overflow(buf)
            caller = ts[1]
            op = _next_op()
            ts[1] = tok = (op, caller, None, ts, buf)
            buf.append(("call", op, func_id, None if caller is None else caller[0], args))
            return tok
        except Exception:
            _count_error()
            return None


def gen_enter(func_id: int, args: tuple) -> Optional[Token]:
    """`enter` for a generator / coroutine: a list token, which `resume` updates.

    On 3.10 it is a frame token, which holds the frame: a suspended frame
    has no `f_back`, and `_innermost` uses that to skip a generator that
    suspended inside `yield from` without giving the current-call slot back
    (3.10's YIELD_FROM has no hook point).
    """
    if not _enabled:
        return None
    try:
        ts = _state()
        buf = ts[0]
        if buf is None:
            return None
        if len(buf) >= buffers._limit:  # before the token becomes current (see `enter`)
            buffers.overflow(buf)
        op = _next_op()
        tok = _push_frame(ts, op, None, sys._getframe(1) if _IN_CONTEXTVAR else None)
        caller = tok[1]
        buf.append(("call", op, func_id, None if caller is None else caller[0], args))
        return tok
    except Exception:
        _count_error()
        return None


def _append(tok: Token, record: tuple) -> None:
    buf = tok[3][0]
    if buf is not None:
        buf.append(record)
        if len(buf) > buffers._limit:
            buffers.overflow(buf)


def gen_leave(tok: Optional[Token], value: Any) -> Any:
    """A marked generator/coroutine finishes with `value` (a `ret` only if it is not None)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            if value is not None:
                _append(tok, ("ret", tok[0], value))
        except Exception:
            _count_error()
    return value


def fail(tok: Optional[Token], exc: Optional[BaseException] = None) -> None:
    """An exception is leaving a marked call (3.10 passes no exception: it is the handled one)."""
    if tok is None:
        return
    try:
        _restore_parent(tok)
        if exc is None:
            exc = sys.exc_info()[1]
        if isinstance(exc, GeneratorExit) or exc is None:
            return  # a generator being closed is not an error
        _append(tok, ("exc", tok[0], exc, exc.__traceback__))
    except Exception:
        _count_error()


def suspend(tok: Optional[Token], value: Any) -> Any:
    """A marked generator yields `value` to its consumer (recorded as a `ret`)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            _append(tok, ("ret", tok[0], value))
        except Exception:
            _count_error()
    return value


def pause(tok: Optional[Token], value: Any) -> Any:
    """A marked generator/coroutine suspends inside `yield from` / `await`; `value` passes through."""
    if tok is not None:
        try:
            _restore_parent(tok)
        except Exception:
            _count_error()
    return value


def resume(tok: Optional[Token]) -> None:
    """A marked generator was resumed (maybe in another thread): it is the current call again."""
    if tok is not None:
        try:
            ts = _state()
            if not _IN_CONTEXTVAR:
                current = ts[1]
                if current is not tok:
                    tok[3] = ts
                    tok[1] = current
                    ts[1] = tok
                return
            if _current.get() is tok:
                return  # after `yield from` in a frame that never stopped being current
            frame = _running_frame_token()
            tok[3] = ts
            tok[1] = _pick_caller(ts[1], frame)
            tok[4] = frame
            _current.set(tok)
        except Exception:
            _count_error()


def read(tok: Optional[Token], value: Any, key: Any) -> Any:
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


def read_cell(tok: Optional[Token], value: Any, key: tuple) -> Any:
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


def _closure_param(recs: Optional[Token], value: Any) -> Any:
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
