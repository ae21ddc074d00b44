"""Op-mode hooks: the operations inside an op-granularity marked function.

Instrumented code reaches them, like the call-mode hooks of `tracer.hooks`,
through the module globals listed in `tracer.hook_table`. They share the
call-mode machinery (thread state, current call, error counting) from
`tracer.hooks`, and follow the same rules: append at most one record, never
summarise a value, never raise into user code.

Records (consumed by `tracer.provenance.Resolver`):

    ("callref", op, func_id, parent_op, (ref, ...))
    ("retref",  op, ref)
    ("op",      out_ref, op, site, opname, (input_ref, ...))
    ("readref", op, name, ref)
"""
from __future__ import annotations

import sys
from typing import Any, Optional

from tracer import buffers, hooks
from tracer.hooks import (_closure_param, _count_error, _innermost, _next_op, _params_registry,
                          _push_call, _push_frame, _restore_parent, _state)


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


def _op_enter(func_id: int, names: tuple, args: tuple, frame: Any) -> Optional[list]:
    if not hooks._enabled:
        return None
    try:
        ts = _state()
        buf = ts[0]
        if buf is None:
            return None
        op = _next_op()
        state = FrameState()
        tok = _push_call(ts, op, state) if frame is None else _push_frame(ts, op, state, frame)
        caller = tok[1]
        from_caller = _caller_refs(caller, args)
        refs = tuple(r if r is not None else (_keep(a),) for r, a in zip(from_caller, args))
        for name, ref in zip(names, refs):
            if name is not None:  # None: an argument held in a cell (not shadowed)
                state.locals[name] = ref
        buf.append(("callref", op, func_id, caller[0] if caller is not None else None, refs))
        if len(buf) > buffers._limit:
            buffers.overflow(buf)
        return tok
    except Exception:
        _count_error()
        return None


def op_enter(func_id: int, names: tuple, *args: Any) -> Optional[list]:
    """Like `hooks.enter`, and gives the frame a shadow state with one Ref per argument."""
    return _op_enter(func_id, names, args, None)


def op_gen_enter(func_id: int, names: tuple, *args: Any) -> Optional[list]:
    """`op_enter` for a generator / coroutine on 3.10 (a frame token, see `hooks.gen_enter`)."""
    return _op_enter(func_id, names, args, sys._getframe(1))


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
                buf.append(("retref", tok[0], ref))
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
    if not hooks._enabled:
        return None
    try:
        ts = _state()
        parent = _innermost(ts)
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
