"""The hot path: functions that instrumented code calls.

Rewritten code reaches these through module globals named `__@trace_<name>`
(see `HOOK_GLOBALS`), never through code constants, so rewritten code
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
    ("op",   out_ref, op, site, opname, (input_ref, ...))   (op mode, see below)

Op mode uses "callref" (one ref per argument instead of the values),
"retref" (a ref of the returned value) and "readref" (a ref of the
parameter's value); refs are described in the op-mode section below.
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


# --- op mode ---------------------------------------------------------------
#
# In op mode a frame's token carries a `FrameState`: for each local variable
# and each op site, the ref (below) of the value currently held there. The
# rewriter tells each hook statically where every operand came from (a
# "spec" entry per operand), so provenance never depends on object identity:
#
#   ("c", value)   a constant of the code      ("l", name)  a local variable
#   ("s", site)    the result of op `site`     ("?",)       untracked (a fresh node)


# A "ref" stands for one value node: a 1-tuple `(value,)`, unique by
# identity. The resolver maps refs to node ids (by id, keeping them alive for
# the episode). A tuple and not a mutable record: nothing on the hot path is
# ever written by another thread, and a tuple of plain data is untracked by
# the cyclic GC, so millions of buffered records do not make every full
# collection slower (that made `s += x` loops superlinear).
Ref = tuple


class FrameState:
    """Shadow provenance of one op-mode frame."""

    __slots__ = ("locals", "sites", "pending", "last_ret", "last_ret_value", "last_capture")

    def __init__(self) -> None:
        self.locals: dict = {}
        self.sites: dict = {}
        self.pending: dict = {}
        self.last_capture: Optional[tuple] = None
        self.last_ret: Optional[Ref] = None
        self.last_ret_value: Any = None


_CLIP = 256  # longer str/bytes are kept as a clipped copy (see `clip`)
_CLIPPED = object()  # marks a clipped copy; `object()` itself is not GC-tracked


def clip(value) -> tuple:
    """A long str/bytes recorded by a copy of its head, so no hook holds a reference.

    Holding a reference to a string being built with `s += x` would defeat
    CPython's in-place concatenation and make the loop quadratic (see
    bytecode-pitfalls.md); a clipped copy keeps each record O(1). The copy
    is an exact tuple `(_CLIPPED, head, length, type name)`: untracked by GC.
    """
    return (_CLIPPED, value[:_CLIP], len(value), type(value).__name__)


def is_clipped(value) -> bool:
    return type(value) is tuple and len(value) == 4 and value[0] is _CLIPPED


def _keep(value):
    t = type(value)
    if (t is str or t is bytes) and len(value) > _CLIP:
        return clip(value)
    return value


def _same(ref: Ref, value: Any) -> bool:
    kept = ref[0]
    return kept is value or (is_clipped(kept) and type(value) in (str, bytes) and len(value) == kept[2])


def _resolve(state: FrameState, entry: tuple, value: Any, has_value: bool) -> Optional[Ref]:
    kind = entry[0]
    if kind == "l":
        ref = state.locals.get(entry[1])
        if ref is not None and (not has_value or _same(ref, value)):
            return ref
    elif kind == "s":
        ref = state.sites.get(entry[1])
        if ref is not None and (not has_value or _same(ref, value)):
            return ref
    elif kind == "c":
        return (_keep(entry[1]),)
    return (_keep(value),) if has_value else None


def op_enter(func_id: int, names: tuple, *args: Any) -> Optional[list]:
    """Like `enter`, and gives the frame a shadow state with one Ref per argument."""
    if not _enabled:
        return None
    try:
        ts = _state()
        buf = ts[0]
        if buf is None:
            return None
        parent = _get_current(ts)
        op = _next_op()
        state = FrameState()
        from_caller = _caller_refs(parent, args)
        refs = tuple(r if r is not None else (_keep(a),) for r, a in zip(from_caller, args))
        for name, ref in zip(names, refs):
            if name is not None:  # None: an argument held in a cell (not shadowed)
                state.locals[name] = ref
        tok = [op, parent, state, ts]
        _set_current(ts, tok)
        buf.append(("callref", op, func_id, parent[0] if parent is not None else None,
                    refs, perf_counter_ns()))
        if len(buf) > buffers._limit:
            buffers.overflow(buf)
        return tok
    except Exception:
        _count_error()
        return None


def op_leave(tok: Optional[list], value: Any) -> Any:
    """`leave` for op mode: the caller's post-call hook links to this return's node."""
    if tok is not None:
        try:
            _restore_parent(tok)
            buf = tok[3][0]
            if buf is not None:
                # The returned object itself, not a clipped copy: feedback is
                # usually given on it (node_for_value needs the object). Holding
                # it costs a caller's `s += x` loop at most one copy.
                ref = (value,)
                buf.append(("retref", tok[0], ref, perf_counter_ns()))
                parent = tok[1]
                if parent is not None and parent[2] is not None:
                    parent[2].last_ret = ref
                    parent[2].last_ret_value = value
        except Exception:
            _count_error()
    return value


def op_nested_enter() -> Optional[list]:
    """A comprehension / generator expression of an op-mode function starts.

    It is not a call of its own: its operations belong to the enclosing
    marked call, so its token has that call's op and a fresh shadow state,
    and it never becomes the current call.
    """
    if not _enabled:
        return None
    try:
        ts = _state()
        parent = _get_current(ts)
        if parent is None or ts[0] is None:
            return None
        return [parent[0], None, FrameState(), ts]
    except Exception:
        _count_error()
        return None


def nested_pass(tok: Optional[list], value: Any) -> Any:
    """Return / yield of nested op-mode code: nothing to record."""
    return value


def nested_fail(tok: Optional[list], exc: Optional[BaseException] = None) -> None:
    return None


def nested_resume(tok: Optional[list]) -> None:
    return None


def _record_op(tok: list, state: FrameState, site: int, opname: str, inputs: list, value: Any) -> Ref:
    out = (_keep(value),)
    state.sites[site] = out
    buf = tok[3][0]
    if buf is not None:
        buf.append(("op", out, tok[0], site, opname, tuple(inputs)))
        if len(buf) > buffers._limit:
            buffers.overflow(buf)
    return out


def op(tok: Optional[list], site: int, spec: tuple, opname: str, *values: Any) -> Any:
    """One traced operation: `values` are its operands then its result (returned)."""
    result = values[-1]
    if tok is None:
        return result
    try:
        state = tok[2]
        inputs = []
        i = 0
        for entry in spec:
            value = values[i]
            i += 1
            kind = entry[0]
            if kind == "l":
                ref = state.locals.get(entry[1])
            elif kind == "s":
                ref = state.sites.get(entry[1])
            else:
                ref = None
            if ref is None or (ref[0] is not value and not _same(ref, value)):
                ref = (_keep(value),)
            inputs.append(ref)
        out = state.sites[site] = (_keep(result),)
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, tuple(inputs)))
            if len(buf) > buffers._limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()
    return result


def op_attr(tok: Optional[list], site: int, spec: tuple, opname: str, *values: Any) -> Any:
    """`op` for a plain attribute load (`opname` is ".name"): also a parameter read if it is one."""
    result = op(tok, site, spec, opname, *values)
    if tok is not None:
        try:
            params = _params_registry()
            recs = params.by_attr.get(opname[1:]) if params is not None else None
            if recs:
                for rec in recs:
                    if rec.get() is result:
                        out = tok[2].sites.get(site)
                        buf = tok[3][0]
                        if out is not None and buf is not None:
                            buf.append(("readref", tok[0], rec.name, out))
                        break
        except Exception:
            _count_error()
    return result


def op_packed(tok: Optional[list], packed: tuple, site: int, spec: tuple, opname: str) -> Any:
    """`op` / `op_attr` for 3.10, where operands and result come packed in one tuple."""
    if opname[0] == ".":
        return op_attr(tok, site, spec, opname, *packed)
    return op(tok, site, spec, opname, *packed)


def op_result(tok: Optional[list], value: Any, site: int, spec: tuple, opname: str) -> Any:
    """A traced operation whose operand values were not captured (3.10 calls, long f-strings)."""
    if tok is None:
        return value
    try:
        state = tok[2]
        inputs = [_resolve(state, entry, None, False) for entry in spec]
        _record_op(tok, state, site, opname, [r for r in inputs if r is not None], value)
    except Exception:
        _count_error()
    return value


def op_capture(tok: Optional[list], site: int, spec: Optional[tuple], *values: Any) -> None:
    """Operand values of `site` taken before it runs (calls; untracked operands of `x = a op b`).

    For a call (`spec` given), a marked callee picks the caller's Refs of
    its arguments from here (see `_caller_refs`).
    """
    if tok is not None:
        try:
            state = tok[2]
            state.pending[site] = values
            if spec is not None:
                state.last_capture = (spec, values)
            state.last_ret = None
            state.last_ret_value = None
        except Exception:
            _count_error()


def op_capture_packed(tok: Optional[list], args: tuple, site: int, spec: tuple) -> None:
    """`op_capture` for 3.10, where a call's arguments come packed in one tuple."""
    op_capture(tok, site, spec, *args)


def _caller_refs(parent: Optional[list], args: tuple) -> list:
    """Refs of `args` in the calling op-mode frame, where identity picks exactly one argument."""
    out: list = [None] * len(args)
    if parent is None:
        return out
    state = parent[2]
    if state is None:
        return out
    capture = state.last_capture
    if capture is None:
        return out
    state.last_capture = None
    spec, values = capture
    for i, arg in enumerate(args):
        matches = [j for j, v in enumerate(values) if v is arg]
        if len(matches) == 1:
            j = matches[0]
            out[i] = _resolve(state, spec[j], arg, True)
    return out


def op_call(tok: Optional[list], value: Any, site: int, spec: tuple, opname: str,
            receiver: Optional[tuple] = None) -> Any:
    """A call returned `value`; its arguments were captured by `op_capture`.

    `receiver` is where the object of a method call (`obj.method(...)`) came
    from (a spec entry): it is the call's first input. A call of a marked
    function is already a `call` event: its result is linked to that call's
    `ret` instead of becoming an op of its own.
    """
    if tok is None:
        return value
    try:
        state = tok[2]
        args = state.pending.pop(site, None)
        ret = state.last_ret
        if ret is not None and state.last_ret_value is value:
            state.last_ret = None
            state.last_ret_value = None
            state.sites[site] = ret
            return value
        if args is None:
            inputs = [_resolve(state, entry, None, False) for entry in spec]
        else:
            inputs = [_resolve(state, entry, args[i], True) for i, entry in enumerate(spec)]
        if receiver is not None:
            inputs.insert(0, _resolve(state, receiver, None, False))
        _record_op(tok, state, site, opname, [r for r in inputs if r is not None], value)
    except Exception:
        _count_error()
    return value


def op_stored(tok: Optional[list], value: Any, site: int, spec: tuple, opname: str, name: Optional[str]) -> None:
    """`x = a op b` ran untouched (in-place concatenation stays possible); `value` is x now."""
    if tok is None:
        return
    try:
        state = tok[2]
        captured = state.pending.pop(site, ())
        inputs = []
        j = 0
        for entry in spec:
            if entry[0] == "?":
                if j < len(captured):
                    inputs.append((_keep(captured[j]),))
                j += 1
            else:
                ref = _resolve(state, entry, None, False)
                if ref is not None:
                    inputs.append(ref)
        out = _record_op(tok, state, site, opname, inputs, value)
        if name is not None:
            state.locals[name] = out
    except Exception:
        _count_error()


def op_store(tok: Optional[list], value: Any, name: str, source: tuple) -> None:
    """Local `name` was just assigned `value`, which came from `source` (a spec entry)."""
    if tok is None:
        return
    try:
        state = tok[2]
        kind = source[0]
        if kind == "l":
            ref = state.locals.get(source[1])
        elif kind == "s":
            ref = state.sites.get(source[1])
        else:
            ref = None
        if ref is None or (ref[0] is not value and not _same(ref, value)):
            ref = (_keep(value),)
        state.locals[name] = ref
    except Exception:
        _count_error()


def op_global(tok: Optional[list], value: Any, site: int, key: tuple) -> Any:
    """A global was loaded in op mode: a parameter read if it is one; its Ref becomes site's."""
    if tok is None:
        return value
    try:
        params = _params_registry()
        _op_load(tok, value, site, params.by_global.get(key) if params is not None else None)
    except Exception:
        _count_error()
    return value


def op_cell(tok: Optional[list], value: Any, site: int, key: tuple) -> Any:
    """`op_global` for a closure variable (`key` as in `read_cell`)."""
    if tok is None:
        return value
    try:
        params = _params_registry()
        _op_load(tok, value, site, _closure_param(params.by_closure.get(key), value) if params is not None else None)
    except Exception:
        _count_error()
    return value


def _op_load(tok: list, value: Any, site: int, rec: Any) -> None:
    """The loaded value's Ref becomes `site`'s; a read of `rec` if `value` is its current value."""
    ref = (_keep(value),)
    tok[2].sites[site] = ref
    if rec is not None and rec.get() is value:
        buf = tok[3][0]
        if buf is not None:
            buf.append(("readref", tok[0], rec.name, ref))


HOOK_GLOBALS: dict[str, Any] = {
    "__@trace_enter": enter,
    "__@trace_gen_enter": gen_enter,
    "__@trace_leave": leave,
    "__@trace_gen_leave": gen_leave,
    "__@trace_fail": fail,
    "__@trace_suspend": suspend,
    "__@trace_pause": pause,
    "__@trace_resume": resume,
    "__@trace_read": read,
    "__@trace_read_cell": read_cell,
    "__@trace_op_enter": op_enter,
    "__@trace_op_leave": op_leave,
    "__@trace_op_nested_enter": op_nested_enter,
    "__@trace_nested_pass": nested_pass,
    "__@trace_nested_fail": nested_fail,
    "__@trace_nested_resume": nested_resume,
    "__@trace_op": op,
    "__@trace_op_attr": op_attr,
    "__@trace_op_packed": op_packed,
    "__@trace_op_result": op_result,
    "__@trace_op_capture": op_capture,
    "__@trace_op_capture_packed": op_capture_packed,
    "__@trace_op_call": op_call,
    "__@trace_op_stored": op_stored,
    "__@trace_op_store": op_store,
    "__@trace_op_global": op_global,
    "__@trace_op_cell": op_cell,
}
