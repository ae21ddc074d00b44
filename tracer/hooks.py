"""The hot path: functions that instrumented code calls.

Rewritten code reaches these through module globals named `@trace_<name>`
(see `HOOK_GLOBALS`), never through code constants, so rewritten code
objects stay marshallable. Every hook appends at most one tuple to the
calling thread's buffer (`tracer.buffers`) and returns; none of them
summarises a value, calls a user dunder or raises (internal errors are
counted in `errors()`).

Per-frame state is a *token* created by `enter` and kept at the bottom of
the instrumented frame's value stack (invisible to `locals()` and to the
function's own code): `[op_id, saved_parent_token, frame_state]`. The token
of the innermost running marked call lives in a ContextVar, so nesting is
right across threads and asyncio tasks (each task runs in its own context);
generators swap it at every `yield` and resume.

Raw records (tuples, first item is the tag) consumed by
`tracer.provenance.Resolver`:

    ("call", op, func_id, parent_op, args_tuple, thread_ident, t_ns)
    ("ret",  op, value, t_ns)
    ("exc",  op, exception, traceback, t_ns)
    ("read", op, name, value)
    ("op",   op, parent_op, site, opname, inputs, value)   (op mode, see below)
    ("store", op, local_index, ref)                         (op mode)
"""
from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any, Iterator, Optional

from tracer import buffers

_tls = buffers._tls
_new_thread_buffer = buffers._new_thread_buffer
_get_ident = threading.get_ident

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


def current_op() -> Optional[int]:
    """Op id of the innermost marked call running in this context, or None."""
    tok = _current.get()
    return tok[0] if tok is not None else None


def _buffer() -> Optional[list]:
    try:
        return _tls.buf
    except AttributeError:
        return _new_thread_buffer()


# --- call mode -------------------------------------------------------------


def _restore_parent(tok: list) -> None:
    """The frame of `tok` stops being the current call: its resumer's call is current again.

    Only if it still is current: an exception thrown into a suspended
    generator (`close()`, `throw()`, garbage collection) leaves it without a
    resume hook, and then the current call is the thrower's, left as is.
    """
    if _current.get() is tok:
        _current.set(tok[1])



def enter(func_id: int, *args: Any) -> Optional[list]:
    """A marked function starts running; returns the frame's token (or None: not traced)."""
    if not _enabled:
        return None
    try:
        try:
            buf = _tls.buf
        except AttributeError:
            buf = _new_thread_buffer()
        if buf is None:
            return None
        parent = _current.get()
        op = _next_op()
        tok = [op, parent, None]
        _current.set(tok)
        buf.append(("call", op, func_id, parent[0] if parent is not None else None,
                    args, _get_ident(), perf_counter_ns()))
        if len(buf) > buffers._limit:
            buffers.overflow(buf)
        return tok
    except BaseException:
        _count_error()
        return None


def leave(tok: Optional[list], value: Any) -> Any:
    """A marked call returns `value` (passed through unchanged)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            buf = _buffer()
            if buf is not None:
                buf.append(("ret", tok[0], value, perf_counter_ns()))
                if len(buf) > buffers._limit:
                    buffers.overflow(buf)
        except BaseException:
            _count_error()
    return value


def gen_leave(tok: Optional[list], value: Any) -> Any:
    """A marked generator/coroutine finishes with `value` (a `ret` only if it is not None)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            if value is not None:
                buf = _buffer()
                if buf is not None:
                    buf.append(("ret", tok[0], value, perf_counter_ns()))
        except BaseException:
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
        buf = _buffer()
        if buf is not None:
            buf.append(("exc", tok[0], exc, exc.__traceback__, perf_counter_ns()))
    except BaseException:
        _count_error()


def suspend(tok: Optional[list], value: Any) -> Any:
    """A marked generator yields `value` to its consumer (recorded as a `ret`)."""
    if tok is not None:
        try:
            _restore_parent(tok)
            buf = _buffer()
            if buf is not None:
                buf.append(("ret", tok[0], value, perf_counter_ns()))
                if len(buf) > buffers._limit:
                    buffers.overflow(buf)
        except BaseException:
            _count_error()
    return value


def pause(tok: Optional[list], value: Any) -> Any:
    """A marked generator/coroutine suspends inside `yield from` / `await`; `value` passes through."""
    if tok is not None:
        try:
            _restore_parent(tok)
        except BaseException:
            _count_error()
    return value


def resume(tok: Optional[list]) -> None:
    """A marked generator was resumed: it is the current call again, under its new resumer."""
    if tok is not None:
        try:
            tok[1] = _current.get()
            _current.set(tok)
        except BaseException:
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
        buf = _buffer()
        if buf is not None:
            buf.append(("read", tok[0], rec.name, value))
    except BaseException:
        _count_error()
    return value


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


# --- op mode ---------------------------------------------------------------
#
# In op mode a frame's token carries a `FrameState`: for each local slot and
# each op site, the record (a "ref": a small list that the resolver later
# fills with a node id) of the value currently held there. The rewriter
# tells each hook statically where every operand comes from (an "input
# spec"), so provenance never depends on object identity.


class FrameState:
    """Shadow provenance of one op-mode frame: local -> ref, site -> ref of its last result."""

    __slots__ = ("locals", "sites")

    def __init__(self) -> None:
        self.locals: dict = {}
        self.sites: dict = {}


_CLIP = 256  # longer str/bytes are recorded as a clipped copy (see `_keep`)


class Clipped:
    """A long str/bytes recorded by copy of its head, so the hook holds no reference.

    Holding a reference to a string being built with `s += x` would defeat
    CPython's in-place concatenation and make the loop quadratic (see
    bytecode-pitfalls.md); a clipped copy keeps the record O(1).
    """

    __slots__ = ("head", "length", "type_name")

    def __init__(self, value) -> None:
        self.head = value[:_CLIP]
        self.length = len(value)
        self.type_name = type(value).__name__


def _keep(value):
    t = type(value)
    if (t is str or t is bytes) and len(value) > _CLIP:
        return Clipped(value)
    return value


def op_enter(func_id: int, *args: Any) -> Optional[list]:
    """Like `enter`, and gives the frame a shadow state with the arguments' refs."""
    tok = enter(func_id, *args)
    if tok is not None:
        state = FrameState()
        # argument i is input i of the call: ref ("arg", op, i) resolved by the resolver
        op = tok[0]
        for i in range(len(args)):
            state.locals[i] = ("arg", op, i)
        tok[2] = state
    return tok


def op_nested_enter() -> Optional[list]:
    """A comprehension / generator expression of a marked op-mode function starts.

    It is not a call of its own: its operations belong to the enclosing
    marked call, so it gets a token with that call's op and a fresh state.
    """
    if not _enabled:
        return None
    try:
        parent = _current.get()
        if parent is None:
            return None
        buf = _buffer()
        if buf is None:
            return None
        tok = [parent[0], parent, FrameState(), True]
        return tok
    except BaseException:
        _count_error()
        return None


def op_nested_leave(tok: Optional[list], value: Any) -> Any:
    return value


def op(tok: Optional[list], value: Any, site: int, opname: str, spec: tuple, *operands: Any) -> Any:
    """One traced operation produced `value` (passed through).

    `spec[i]` says where operand i came from: ("c",) a constant, ("l", slot)
    a local, ("s", site) the last result of another site in this frame,
    ("?",) somewhere untracked (a fresh input node), ("a", name) an
    attribute base read by name. `operands` are the operand values that need
    a fresh node (in order, one per "c"/"?" entry).
    """
    if tok is None:
        return value
    try:
        state = tok[2]
        if state is None:
            return value
        buf = _buffer()
        if buf is None:
            return value
        refs = []
        j = 0
        for entry in spec:
            kind = entry[0]
            if kind == "l":
                refs.append(state.locals.get(entry[1]))
                if refs[-1] is None:
                    refs[-1] = ("val", _keep(operands[j]) if j < len(operands) else None)
                j += 1
            elif kind == "s":
                refs.append(state.sites.get(entry[1]))
                j += 1
            else:
                refs.append(("val", _keep(operands[j]) if j < len(operands) else None))
                j += 1
        ref = [None]  # filled with the output node id by the resolver
        state.sites[site] = ref
        buf.append(("op", ref, tok[0], site, opname, refs, _keep(value)))
        if len(buf) > buffers._limit:
            buffers.overflow(buf)
    except BaseException:
        _count_error()
    return value


def store(tok: Optional[list], value: Any, slot: Any, source: tuple) -> None:
    """Local `slot` was just assigned `value`, which came from `source` (an input spec entry)."""
    if tok is None:
        return
    try:
        state = tok[2]
        if state is None:
            return
        kind = source[0]
        if kind == "s":
            ref = state.sites.get(source[1])
        elif kind == "l":
            ref = state.locals.get(source[1])
        else:
            ref = None
        if ref is None:
            # an untracked value: it becomes its own input node when used
            state.locals.pop(slot, None)
        else:
            state.locals[slot] = ref
    except BaseException:
        _count_error()


HOOK_GLOBALS: dict[str, Any] = {
    "@trace_enter": enter,
    "@trace_leave": leave,
    "@trace_gen_leave": gen_leave,
    "@trace_fail": fail,
    "@trace_suspend": suspend,
    "@trace_pause": pause,
    "@trace_resume": resume,
    "@trace_read": read,
    "@trace_op_enter": op_enter,
    "@trace_op_nested_enter": op_nested_enter,
    "@trace_op": op,
    "@trace_store": store,
}
