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
# rewriter tells each hook statically where every operand came from, so
# provenance never depends on object identity (identity only guards against a
# shadow that went stale). The rewriter's analysis has a "spec" entry per
# operand:
#
#   ("c", value)   a constant of the code      ("l", name)  a local variable
#   ("s", site)    the result of op `site`     ("?",)       untracked (a fresh node)
#
# and hooks get it as a "key": where the operand's Ref is kept in
# `FrameState.refs` (the local's name or the site id), or None (a constant or
# untracked: a fresh node for the value seen). Hooks that may not see the
# operand's value (`op_stored`, `op_call`) get a constant as `(value,)`;
# only `op_result` (3.10, k > 2) still gets the spec entries themselves.
#
# Those hooks run once per operation: each is written out in full, with no
# helper call on the common path (a Python call costs as much as the rest of
# the hook), `(_keep(v),)` inlined as
# `(v,) if (t := type(v)) is not str and t is not bytes or len(v) <= _CLIP else (clip(v),)`
# (types compared by identity: hashing or comparing a type could run a
# metaclass's __hash__ / __eq__, user code).


# A "ref" stands for one value node: a 1-tuple `(value,)`, unique by
# identity. The resolver maps refs to node ids (by id, keeping them alive for
# the episode). A tuple and not a mutable record: nothing on the hot path is
# ever written by another thread, and a tuple of plain data is untracked by
# the cyclic GC, so millions of buffered records do not make every full
# collection slower (that made `s += x` loops superlinear).
Ref = tuple


class FrameState:
    """Shadow provenance of one op-mode frame.

    `refs` maps a local variable's name (a str) to the Ref of the value it
    holds, and an op site's id (an int) to the Ref of the result it left on
    the stack: one dict, so a hook finds any operand with one lookup.
    """

    __slots__ = ("refs", "pending", "last_ret", "last_capture")

    def __init__(self) -> None:
        self.refs: dict = {}
        self.pending: dict = {}  # site -> untracked operand values of an `x = a op b` (`op_capture`)
        self.last_capture: Optional[tuple] = None  # (site, keys, argument values) of the call about to run
        self.last_ret: Optional[tuple] = None  # (Ref, value) of the return of the marked call it made last


_CLIP = 256  # longer str/bytes are kept as a clipped copy (see `clip`)
# `buffers.limit()` as of the last op-mode frame entry (read there): a module
# global is cheaper to test on every op than `buffers._limit`, a module
# attribute. A `set_limit` made while op-mode code runs applies from the next
# op-mode frame entry on.
_limit = buffers._limit
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
    if kept is value:
        return True
    t = type(value)  # compared by identity: `in` would call a metaclass's __eq__
    return is_clipped(kept) and (t is str or t is bytes) and len(value) == kept[2]


def _resolve(state: FrameState, entry: tuple, value: Any, has_value: bool) -> Optional[Ref]:
    kind = entry[0]
    if kind == "l" or kind == "s":
        ref = state.refs.get(entry[1])
        if ref is not None and (not has_value or _same(ref, value)):
            return ref
    elif kind == "c":
        return (_keep(entry[1]),)
    return (_keep(value),) if has_value else None


def _op_enter(func_id: int, names: tuple, args: tuple, frame: Any) -> Optional[list]:
    global _limit
    if not hooks._enabled:
        return None
    try:
        _limit = buffers._limit
        ts = _state()
        buf = ts[0]
        if buf is None:
            return None
        if len(buf) >= _limit:  # before the token becomes current (see `hooks.enter`)
            buffers.overflow(buf)
        op = _next_op()
        state = FrameState()
        tok = _push_call(ts, op, state) if frame is None else _push_frame(ts, op, state, frame)
        caller = tok[1]
        from_caller = _caller_refs(caller, args)
        refs = tuple(r if r is not None else (_keep(a),) for r, a in zip(from_caller, args))
        for name, ref in zip(names, refs):
            if name is not None:  # None: an argument held in a cell (not shadowed)
                state.refs[name] = ref
        buf.append(("callref", op, func_id, caller[0] if caller is not None else None, refs))
        return tok
    except Exception:
        _count_error()
        return None


def op_enter(func_id: int, names: tuple, *args: Any) -> Optional[list]:
    """Like `hooks.enter`, and gives the frame a shadow state with one Ref per argument."""
    return _op_enter(func_id, names, args, None)


def op_gen_enter(func_id: int, names: tuple, *args: Any) -> Optional[list]:
    """`op_enter` for a generator / coroutine (a list token, on 3.10 a frame token: see `hooks.gen_enter`)."""
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
                    parent[2].last_ret = (ref, value)
        except Exception:
            _count_error()
    return value


def op_nested_enter() -> Optional[list]:
    """A comprehension / generator expression of an op-mode function starts.

    It is not a call of its own: its operations belong to the enclosing
    marked call, so its token has that call's op and a fresh shadow state,
    and it never becomes the current call.
    """
    global _limit
    if not hooks._enabled:
        return None
    try:
        _limit = buffers._limit
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


def _record_op(tok: list, state: FrameState, site: int, opname: str, inputs: list, value: Any,
               name: Optional[str]) -> Ref:
    """Record op `site` (not on the hot path): its result's Ref goes to local `name`, else to `site`."""
    out = (_keep(value),)
    state.refs[site if name is None else name] = out
    buf = tok[3][0]
    if buf is not None:
        buf.append(("op", out, tok[0], site, opname, tuple(inputs)))
        if len(buf) > _limit:
            buffers.overflow(buf)
    return out


_params = None  # `tracer.params.registry`, once it exists (`_find_params`)


def _find_params():
    global _params
    _params = _params_registry()
    return _params


# --- one traced operation: operands and result seen -------------------------
#
# Every hook below gets the token, the operand values and the result (the
# instruction sequences are `compat.observe_operation`'s), then `site`,
# `keys` (one per operand, see above), `opname` and `dest`; it records the
# op and returns the result. `dest` is where the result's Ref goes in
# `FrameState.refs`: the name of the local variable the result is stored
# into right after the hook (the store itself runs untouched, with no hook
# of its own), or `site` when the result stays on the stack.


def op1(tok: Optional[list], x: Any, result: Any, site: int, keys: tuple, opname: str,
        dest: Any) -> Any:
    """A traced operation with one operand (unary ops, formatting)."""
    if tok is None:
        return result
    try:
        refs = tok[2].refs
        rx = refs.get(keys[0])
        if rx is None or (rx[0] is not x and not _same(rx, x)):
            rx = (x,) if (t := type(x)) is not str and t is not bytes or len(x) <= _CLIP else (clip(x),)
        out = ((result,) if (t := type(result)) is not str and t is not bytes or len(result) <= _CLIP
               else (clip(result),))
        refs[dest] = out
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, (rx,)))
            if len(buf) > _limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()
    return result


def op2(tok: Optional[list], x: Any, y: Any, result: Any, site: int, keys: tuple, opname: str,
        dest: Any) -> Any:
    """A traced operation with two operands (binary ops, comparisons, subscripts)."""
    if tok is None:
        return result
    try:
        refs = tok[2].refs
        kx, ky = keys
        rx = refs.get(kx)
        if rx is None or (rx[0] is not x and not _same(rx, x)):
            rx = (x,) if (t := type(x)) is not str and t is not bytes or len(x) <= _CLIP else (clip(x),)
        ry = refs.get(ky)
        if ry is None or (ry[0] is not y and not _same(ry, y)):
            ry = (y,) if (t := type(y)) is not str and t is not bytes or len(y) <= _CLIP else (clip(y),)
        out = ((result,) if (t := type(result)) is not str and t is not bytes or len(result) <= _CLIP
               else (clip(result),))
        refs[dest] = out
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, (rx, ry)))
            if len(buf) > _limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()
    return result


def op(tok: Optional[list], *args: Any) -> Any:
    """A traced operation with k > 2 operands (f-strings, slices; 3.11+).

    `args` are the operands, the result, then `site, keys, opname, dest`.
    """
    result = args[-5]
    if tok is None:
        return result
    try:
        site, keys, opname, dest = args[-4:]
        refs = tok[2].refs
        inputs = []
        for key, value in zip(keys, args):
            ref = refs.get(key)
            if ref is None or (ref[0] is not value and not _same(ref, value)):
                ref = (_keep(value),)
            inputs.append(ref)
        out = (_keep(result),)
        refs[dest] = out
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, tuple(inputs)))
            if len(buf) > _limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()
    return result


def op_attr(tok: Optional[list], x: Any, result: Any, site: int, keys: tuple, opname: str,
            dest: Any) -> Any:
    """`op1` for a plain attribute load (`opname` is ".attr"): also a parameter read if it is one."""
    if tok is None:
        return result
    try:
        refs = tok[2].refs
        rx = refs.get(keys[0])
        if rx is None or (rx[0] is not x and not _same(rx, x)):
            rx = (x,) if (t := type(x)) is not str and t is not bytes or len(x) <= _CLIP else (clip(x),)
        out = ((result,) if (t := type(result)) is not str and t is not bytes or len(result) <= _CLIP
               else (clip(result),))
        refs[dest] = out
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, (rx,)))
            params = _params if _params is not None else _find_params()
            recs = params.by_attr.get(opname[1:]) if params is not None else None
            if recs:
                for rec in recs:
                    if rec.get() is result:
                        buf.append(("readref", tok[0], rec.name, out))
                        break
            if len(buf) > _limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()
    return result


def op_result(tok: Optional[list], value: Any, site: int, spec: tuple, opname: str,
              name: Optional[str] = None) -> Any:
    """A traced operation whose operand values were not captured (3.10: f-strings of 3+ pieces)."""
    if tok is None:
        return value
    try:
        state = tok[2]
        inputs = [_resolve(state, entry, None, False) for entry in spec]
        _record_op(tok, state, site, opname, [r for r in inputs if r is not None], value, name)
    except Exception:
        _count_error()
    return value


def op_capture(tok: Optional[list], site: int, keys: Optional[tuple], *values: Any) -> None:
    """Operand values of `site` taken before it runs: a call's arguments, or (`keys` None)
    the untracked operands of an `x = a op b`.

    A call's (3.10: `op_capture_packed`) are for its `op_call`, and for a
    marked callee, which picks the caller's Refs of its arguments from them
    (see `_caller_refs`).
    """
    if tok is not None:
        try:
            state = tok[2]
            if keys is None:
                state.pending[site] = values
            else:
                state.last_capture = (site, keys, values)
                state.last_ret = None
        except Exception:
            _count_error()


def op_capture_packed(tok: Optional[list], args: tuple, site: int, keys: tuple) -> None:
    """`op_capture` of a call for 3.10, where its arguments come packed in one tuple."""
    if tok is not None:
        try:
            state = tok[2]
            state.last_capture = (site, keys, args)
            state.last_ret = None
        except Exception:
            _count_error()


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
    _, keys, values = capture
    refs = state.refs
    for i, arg in enumerate(args):
        matches = [j for j, v in enumerate(values) if v is arg]
        if len(matches) == 1:
            key = keys[matches[0]]
            ref = refs.get(key) if type(key) is not tuple else None
            out[i] = ref if ref is not None and _same(ref, arg) else (_keep(arg),)
    return out


def op_call(tok: Optional[list], value: Any, site: int, keys: tuple, opname: str,
            receiver: Any, dest: Any) -> Any:
    """A call returned `value`; its arguments were captured by `op_capture` (or not: 3.10 keyword calls).

    `keys` has one entry per argument, as for `op_stored`: the key of its
    Ref, a constant as `(value,)`, None if untracked. `receiver` is where the
    object of a method call (`obj.method(...)`) came from, the same way (None:
    no receiver, or untracked): it is the call's first input. `dest` as for
    `op2`. A call of a marked function is already a `call` event: its result
    is linked to that call's `ret` instead of becoming an op of its own.
    """
    if tok is None:
        return value
    try:
        state = tok[2]
        refs = state.refs
        ret = state.last_ret
        if ret is not None:
            state.last_ret = None
            if ret[1] is value:
                state.last_capture = None
                refs[dest] = ret[0]
                return value
        capture = state.last_capture
        if capture is not None and capture[0] == site:
            state.last_capture = None
            args = capture[2]
        else:
            args = None
        n = len(keys)
        if args is None or len(args) != n:
            inputs = _refs_unseen(refs, keys) if n else ()
        elif n == 1:
            k0, a0 = keys[0], args[0]
            r0 = refs.get(k0) if type(k0) is not tuple else None
            if r0 is None or (r0[0] is not a0 and not _same(r0, a0)):
                r0 = ((a0,) if (t := type(a0)) is not str and t is not bytes or len(a0) <= _CLIP
                      else (clip(a0),))
            inputs = (r0,)
        else:
            inputs = _refs_seen(refs, keys, args)
        if receiver is not None:
            ref = (_keep(receiver[0]),) if type(receiver) is tuple else refs.get(receiver)
            if ref is not None:
                inputs = (ref,) + inputs
        out = ((value,) if (t := type(value)) is not str and t is not bytes or len(value) <= _CLIP
               else (clip(value),))
        refs[dest] = out
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, inputs))
            if len(buf) > _limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()
    return value


def _refs_seen(refs: dict, keys: tuple, values: tuple) -> tuple:
    """The Refs of operands whose `values` were captured (`keys` as for `op_call`)."""
    out = []
    for key, value in zip(keys, values):
        ref = refs.get(key) if type(key) is not tuple else None
        if ref is None or (ref[0] is not value and not _same(ref, value)):
            ref = (_keep(value),)
        out.append(ref)
    return tuple(out)


def _refs_unseen(refs: dict, keys: tuple) -> tuple:
    """The Refs of operands whose values were not captured: as they are, constants, nothing for the untracked."""
    out = []
    for key in keys:
        if type(key) is tuple:
            out.append((_keep(key[0]),))
        elif key is not None:
            ref = refs.get(key)
            if ref is not None:
                out.append(ref)
    return tuple(out)


def op_stored(tok: Optional[list], value: Any, site: int, keys: tuple, opname: str, name: Optional[str]) -> None:
    """`x = a op b` ran untouched (in-place concatenation stays possible); `value` is x now.

    `keys` has one entry per operand: the key of its Ref (resolved without
    an identity check: its value was not captured, holding `s` for `s += x`
    would make the loop quadratic; no Ref, no input), a constant as a
    1-tuple `(value,)` (a fresh node), or None for an untracked operand,
    whose value `op_capture` took before the op (3.11+; 3.10: no input).
    `name` is x (None: a variable with no shadow, a cell or a comprehension's).
    """
    if tok is None:
        return
    try:
        state = tok[2]
        refs = state.refs
        kx, ky = keys
        captured = state.pending.pop(site, ()) if kx is None or ky is None else ()
        if type(kx) is tuple:
            v = kx[0]
            rx = (v,) if (t := type(v)) is not str and t is not bytes or len(v) <= _CLIP else (clip(v),)
        elif kx is None:
            rx = (_keep(captured[0]),) if captured else None
        else:
            rx = refs.get(kx)
        if type(ky) is tuple:
            v = ky[0]
            ry = (v,) if (t := type(v)) is not str and t is not bytes or len(v) <= _CLIP else (clip(v),)
        elif ky is None:
            j = 1 if kx is None else 0
            ry = (_keep(captured[j]),) if len(captured) > j else None
        else:
            ry = refs.get(ky)
        if rx is None:
            inputs = () if ry is None else (ry,)
        else:
            inputs = (rx,) if ry is None else (rx, ry)
        out = ((value,) if (t := type(value)) is not str and t is not bytes or len(value) <= _CLIP
               else (clip(value),))
        if name is not None:
            refs[name] = out
        buf = tok[3][0]
        if buf is not None:
            buf.append(("op", out, tok[0], site, opname, inputs))
            if len(buf) > _limit:
                buffers.overflow(buf)
    except Exception:
        _count_error()


def op_store(tok: Optional[list], value: Any, name: str, key: Any) -> None:
    """Local `name` was just assigned `value`, whose Ref is kept under `key` (None: a fresh node)."""
    if tok is None:
        return
    try:
        refs = tok[2].refs
        ref = refs.get(key)
        if ref is None or (ref[0] is not value and not _same(ref, value)):
            ref = ((value,) if (t := type(value)) is not str and t is not bytes or len(value) <= _CLIP
                   else (clip(value),))
        refs[name] = ref
    except Exception:
        _count_error()


def op_global(tok: Optional[list], value: Any, site: int, key: tuple, dest: Any) -> Any:
    """A global was loaded in op mode: a parameter read if it is one; its Ref goes to `dest` (as for `op2`)."""
    if tok is None:
        return value
    try:
        ref = ((value,) if (t := type(value)) is not str and t is not bytes or len(value) <= _CLIP
               else (clip(value),))
        tok[2].refs[dest] = ref
        params = _params if _params is not None else _find_params()
        if params is not None:
            rec = params.by_global.get(key)
            if rec is not None and rec.get() is value:
                buf = tok[3][0]
                if buf is not None:
                    buf.append(("readref", tok[0], rec.name, ref))
    except Exception:
        _count_error()
    return value


def op_cell(tok: Optional[list], value: Any, site: int, key: tuple, dest: Any) -> Any:
    """`op_global` for a closure variable (`key` as in `read_cell`)."""
    if tok is None:
        return value
    try:
        ref = ((value,) if (t := type(value)) is not str and t is not bytes or len(value) <= _CLIP
               else (clip(value),))
        tok[2].refs[dest] = ref
        params = _params if _params is not None else _find_params()
        if params is not None:
            recs = params.by_closure.get(key)
            if recs:  # the common case is a closure variable that is no parameter
                rec = _closure_param(recs, value)
                if rec is not None:
                    buf = tok[3][0]
                    if buf is not None:
                        buf.append(("readref", tok[0], rec.name, ref))
    except Exception:
        _count_error()
    return value
