"""Every per-version bytecode difference the rewriter needs, in one place.

The rest of `tracer.rewrite` asks this module for instruction sequences by
meaning ("call hook H with the top k stack items", "copy the frame token to
the top") and never looks at `sys.version_info` itself. Dispatch happens
once, on `PY`, when the module is imported.

Stack pictures below list the stack bottom -> top.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

from bytecode import Instr

PY = sys.version_info[:2]
if PY < (3, 10) or PY >= (3, 14):  # pragma: no cover - guarded by requires-python
    raise ImportError(f"tracer.rewrite supports CPython 3.10-3.13, not {PY}")

HAS_COPY = PY >= (3, 11)          # COPY/SWAP exist (3.10 has DUP_TOP / ROT_N)
HAS_PRECALL = PY == (3, 11)       # PRECALL n must precede CALL n
NULL_AFTER_CALLABLE = PY >= (3, 13)  # 3.13 stacks [callable, NULL, args]; 3.11/3.12 [NULL, callable, args]
HAS_EXCEPTION_TABLE = PY >= (3, 11)
HAS_BLOCK_STACK = not HAS_EXCEPTION_TABLE  # 3.10: SETUP_* blocks on a fixed-size per-frame stack
# 3.10's YIELD_FROM suspends the frame with no instruction boundary to hook:
# generators get a resume hook after it, and a frame-aware entry hook.
YIELD_FROM_IS_OPAQUE = PY < (3, 11)

# Instructions that end a frame with a value.
RETURN_OPS = frozenset({"RETURN_VALUE", "RETURN_CONST"})
# The instruction after which a generator's body really starts.
BODY_START_OPS = frozenset({"RESUME"}) if PY >= (3, 11) else frozenset({"GEN_START"})
# Wrapping of an async generator's yielded value, which must stay right before YIELD_VALUE.
if PY == (3, 11):
    def is_async_gen_wrap(instr: Instr) -> bool:
        return instr.name == "ASYNC_GEN_WRAP"
else:
    def is_async_gen_wrap(instr: Instr) -> bool:
        return (instr.name == "CALL_INTRINSIC_1"
                and getattr(instr.arg, "name", "") == "INTRINSIC_ASYNC_GEN_WRAP")


def bytecode_from_code(code):
    """Abstract bytecode of `code`, keeping the exception table's stack depths (3.11+)."""
    from bytecode import Bytecode
    if HAS_EXCEPTION_TABLE:
        return Bytecode.from_code(code, conserve_exception_block_stackdepth=True)
    return Bytecode.from_code(code)


def bytecode_to_code(bc, try_begins: list):
    """Assemble `bc`, keeping the exception depths the rewriter set on `try_begins`.

    bytecode would recompute them as the lowest depth inside each region,
    and it models `COPY n` as popping n items: a COPY that reaches the token
    at the stack bottom would drag a region's depth to 0. So the depths are
    set by the rewriter (the original depth + 1 for the token) and only the
    frame's stack size is computed, without the pre/post model.
    """
    if not HAS_EXCEPTION_TABLE:
        return bc.to_code()
    wanted = [(tb, tb.stack_depth) for tb in try_begins]
    stacksize = bc.compute_stacksize(check_pre_and_post=False)
    for tb, depth in wanted:
        tb.stack_depth = depth
    return bc.to_code(stacksize=stacksize + 2, compute_exception_stack_depths=False)


def _i(name: str, arg: Any = None, loc: Any = None) -> Instr:
    if arg is None:
        return Instr(name, location=loc) if loc is not None else Instr(name)
    return Instr(name, arg, location=loc) if loc is not None else Instr(name, arg)


def load_global_plain(name: str, loc=None) -> Instr:
    """Push the global `name` (no NULL)."""
    arg = (False, name) if PY >= (3, 11) else name
    return _i("LOAD_GLOBAL", arg, loc)


def global_name(instr: Instr) -> str:
    """The name a LOAD_GLOBAL/STORE_GLOBAL refers to."""
    arg = instr.arg
    return arg[1] if isinstance(arg, tuple) else arg


def load_global_pushes_null(instr: Instr) -> bool:
    """True when this LOAD_GLOBAL also pushes a NULL (3.11+ callable form)."""
    return isinstance(instr.arg, tuple) and bool(instr.arg[0])


def attr_name(instr: Instr) -> Optional[str]:
    """Attribute name of a plain (non-method) LOAD_ATTR, None for the method form."""
    arg = instr.arg
    if isinstance(arg, tuple):  # 3.12+: (is_method, name)
        return None if arg[0] else arg[1]
    return arg


def deref_name(instr: Instr) -> Optional[str]:
    """The variable a LOAD_DEREF reads (the value held in a cell or free variable), else None.

    Only LOAD_DEREF loads the value on every version (3.10-3.13). LOAD_CLOSURE
    (3.13: LOAD_FAST of a cell) pushes the cell itself, to build a nested
    function's closure: the value is read, if ever, when that function runs.
    LOAD_CLASSDEREF (3.10, 3.11) and LOAD_FROM_DICT_OR_DEREF (3.12+) occur
    only in class bodies, which are never marked.
    """
    if instr.name != "LOAD_DEREF":
        return None
    arg = instr.arg
    return getattr(arg, "name", arg)  # bytecode's CellVar / FreeVar


def bubble_under(k: int, loc=None) -> list[Instr]:
    """Move the top item under the k items below it: [x1..xk, y] -> [y, x1..xk]."""
    if k <= 0:
        return []
    if HAS_COPY:
        return [_i("SWAP", n, loc) for n in range(k + 1, 1, -1)]
    if k == 1:
        return [_i("ROT_TWO", None, loc)]
    if k == 2:
        return [_i("ROT_THREE", None, loc)]
    if k == 3:
        return [_i("ROT_FOUR", None, loc)]
    return [_i("ROT_N", k + 1, loc)]


def call_hook_on_top(hook: str, k: int, loc=None) -> list[Instr]:
    """Call global `hook` with the top k stack items as arguments; leave its result.

    [x1..xk] -> [hook(x1, ..., xk)]
    """
    seq: list[Instr] = []
    if PY >= (3, 13):
        seq.append(load_global_plain(hook, loc))
        seq += bubble_under(k, loc)
        seq.append(_i("PUSH_NULL", None, loc))
        seq += bubble_under(k, loc)
    elif PY >= (3, 11):
        seq.append(_i("PUSH_NULL", None, loc))
        seq += bubble_under(k, loc)
        seq.append(load_global_plain(hook, loc))
        seq += bubble_under(k, loc)
    else:
        seq.append(load_global_plain(hook, loc))
        seq += bubble_under(k, loc)
    return seq + call(k, loc)


def push_hook(hook: str, loc=None) -> list[Instr]:
    """Push what a call of global `hook` needs before its arguments (callable, NULL)."""
    if PY >= (3, 11):
        return [_i("LOAD_GLOBAL", (True, hook), loc)]
    return [load_global_plain(hook, loc)]


HOOK_PUSH_SIZE = 2 if PY >= (3, 11) else 1  # stack items `push_hook` adds


def call(n: int, loc=None) -> list[Instr]:
    """Call with n positional arguments, the callable pushed by `push_hook`."""
    if PY >= (3, 11):
        seq = [_i("PRECALL", n, loc)] if HAS_PRECALL else []
        return seq + [_i("CALL", n, loc)]
    return [_i("CALL_FUNCTION", n, loc)]


def load_const(value: Any, loc=None) -> Instr:
    return _i("LOAD_CONST", value, loc) if value is not None else (
        Instr("LOAD_CONST", None, location=loc) if loc is not None else Instr("LOAD_CONST", None))


def copy_from(depth: int, loc=None) -> list[Instr]:
    """Push a copy of the item `depth` positions from the top (1 = top). 3.11+ only."""
    assert HAS_COPY
    return [_i("COPY", depth, loc)]


def token_to_top(k: int, loc=None) -> list[Instr]:
    """3.10: rotate [t, x1..xk] -> [x1..xk, t] (no COPY on 3.10)."""
    return [_i("ROT_N", k + 1, loc) if k > 3 else bubble_under(k, loc)[0]
            for _ in range(k)] if k else []


def token_back(k: int, loc=None) -> list[Instr]:
    """3.10: undo `token_to_top`: [x1..xk, t] -> [t, x1..xk]."""
    return bubble_under(k, loc)


def call_hook_with_token(hook: str, token_depth: int, nargs_on_top: int, loc=None,
                         extra_consts: tuple = (), keep_result: bool = True) -> list[Instr]:
    """Call hook(token, *top_args, *extra_consts) where the token sits `token_depth`
    items from the top (counting the top args) and the top `nargs_on_top` items
    are consumed as arguments.

    [t, ..., a1..an] -> [t, ..., hook(t, a1..an, *consts)]   (keep_result)
    [t, ..., a1..an] -> [t, ...]                              (n == 0, not keep_result)
    """
    n = nargs_on_top
    seq: list[Instr] = []
    if HAS_COPY:
        if PY >= (3, 13):
            seq.append(load_global_plain(hook, loc))
            seq += bubble_under(n, loc)
            seq.append(_i("PUSH_NULL", None, loc))
            seq += bubble_under(n, loc)
        else:
            seq.append(_i("PUSH_NULL", None, loc))
            seq += bubble_under(n, loc)
            seq.append(load_global_plain(hook, loc))
            seq += bubble_under(n, loc)
        # the token is now token_depth + 2 from the top
        seq.append(_i("COPY", token_depth + 2, loc))
        seq += bubble_under(n, loc)
        for c in extra_consts:
            seq.append(load_const(c, loc))
        seq += call(1 + n + len(extra_consts), loc)
        if not keep_result:
            seq.append(_i("POP_TOP", None, loc))
        return seq
    # 3.10: rotate the token to the top, duplicate it, rotate the original back.
    k = token_depth - 1  # items above the token
    seq += token_to_top(k, loc)                     # [.., a1..an, t]
    seq.append(_i("DUP_TOP", None, loc))            # [.., a1..an, t, t]
    seq += token_back(k + 1, loc)                   # [t, .., a1..an, t]
    seq += bubble_under(n, loc)                     # [t, .., t, a1..an]
    seq.append(load_global_plain(hook, loc))
    seq += bubble_under(n + 1, loc)                 # [t, .., hook, t, a1..an]
    for c in extra_consts:
        seq.append(load_const(c, loc))
    seq.append(_i("CALL_FUNCTION", 1 + n + len(extra_consts), loc))
    if not keep_result:
        seq.append(_i("POP_TOP", None, loc))
    return seq


def return_const_to_value(instr: Instr) -> list[Instr]:
    """RETURN_CONST c (3.12+) -> LOAD_CONST c; RETURN_VALUE, so a hook can see the value."""
    return [load_const(instr.arg, instr.location), _i("RETURN_VALUE", None, instr.location)]


def exception_handler(hook: str, loc=None) -> list[Instr]:
    """Body of the handler that reports an exception leaving the frame, then re-raises it.

    3.11+: entered with [t, lasti, exc] (TryBegin push_lasti=True).
    3.10:  entered with [t, old_tb, old_val, old_type, tb, val, type] (SETUP_FINALLY);
           the hook reads the exception from sys.exc_info().
    """
    if HAS_COPY:
        seq = push_hook(hook, loc)                  # [t, lasti, exc, <hook>]
        seq += [_i("COPY", 3 + HOOK_PUSH_SIZE, loc),  # t
                _i("COPY", 2 + HOOK_PUSH_SIZE, loc)]  # exc
        seq += call(2, loc)
        seq += [_i("POP_TOP", None, loc), _i("RERAISE", 1, loc)]
        return seq
    # The token stays at the bottom while the hook runs (a copy is passed):
    # if the hook call itself raises (KeyboardInterrupt, RecursionError), the
    # EXCEPT_HANDLER unwinding finds the saved exception triple where it put it.
    seq = call_hook_with_token(hook, 7, 0, loc, keep_result=False)
    seq.append(_i("RERAISE", 0, loc))
    return seq


def load_arg(name: str, is_cell: bool, loc=None) -> Instr:
    """Push argument `name` of the frame (a cell on every version when captured by a closure)."""
    if is_cell:
        from bytecode import CellVar
        return _i("LOAD_DEREF", CellVar(name), loc)
    return _i("LOAD_FAST", name, loc)


def resume_kind(instr: Instr) -> int:
    """For RESUME: 0 function start, 1 after yield, 2 after yield from, 3 after await."""
    return int(instr.arg) & 3


# --- op mode: which instructions are operations, and their operands -----------

_UNARY = {"UNARY_NEGATIVE": "neg", "UNARY_POSITIVE": "pos", "UNARY_INVERT": "invert", "UNARY_NOT": "not"}
STORES_AFTER_OP = frozenset({"STORE_FAST", "STORE_DEREF"})


def operation(instr: Instr) -> Optional[tuple[str, int]]:
    """(op name, number of stack operands) if `instr` is a traced operation (not a call)."""
    name = instr.name
    arg = instr.arg
    if name == "BINARY_OP":
        return arg.name.lower(), 2
    if name.startswith("BINARY_") and name not in ("BINARY_SLICE", "BINARY_SUBSCR") and not HAS_COPY:
        return name[len("BINARY_"):].lower(), 2
    if name.startswith("INPLACE_"):
        return name.lower(), 2
    if name == "BINARY_SUBSCR":
        return "subscript", 2
    if name == "BINARY_SLICE":
        return "slice", 3
    if name == "COMPARE_OP":
        return getattr(arg, "name", str(arg)).lower(), 2
    if name == "IS_OP":
        return ("is not" if arg else "is"), 2
    if name == "CONTAINS_OP":
        return ("not in" if arg else "in"), 2
    if name in _UNARY:
        return _UNARY[name], 1
    if name == "LOAD_ATTR":
        attr = attr_name(instr)
        return (None if attr is None else ("." + attr, 1))
    if name == "FORMAT_VALUE":
        flags = arg if isinstance(arg, int) else int(getattr(arg, "value", 0))
        return "format", 2 if flags & 4 else 1
    if name == "FORMAT_SIMPLE":
        return "format", 1
    if name == "FORMAT_WITH_SPEC":
        return "format", 2
    if name == "CONVERT_VALUE":
        return "convert", 1
    if name == "BUILD_STRING":
        return "fstring", arg
    return None


def is_method_load(instr: Instr) -> bool:
    """True for the load of a method about to be called with its receiver (LOAD_METHOD, 3.12+ LOAD_ATTR (True, name))."""
    if instr.name == "LOAD_METHOD":
        return True
    return instr.name == "LOAD_ATTR" and isinstance(instr.arg, tuple) and bool(instr.arg[0])


def call_arity(instr: Instr) -> Optional[tuple[int, int]]:
    """(arguments on the stack, items above them) for a call instruction, else None."""
    name = instr.name
    if name == "CALL_FUNCTION_EX":
        return 1 + (instr.arg & 1), 0
    if name in ("CALL", "CALL_FUNCTION", "CALL_METHOD"):
        return instr.arg, 0
    if name == "CALL_KW":           # 3.13: the keyword names tuple is on top
        return instr.arg, 1
    if name == "CALL_FUNCTION_KW":  # 3.10: the keyword names tuple is on top
        return instr.arg, 1
    return None


def normalise_for_ops(items: list, method_loads: set) -> list:
    """Rewrite instructions op mode cannot hook as they are into equivalent ones.

    3.13 superinstructions that store (STORE_FAST_STORE_FAST,
    STORE_FAST_LOAD_FAST) are split, so every store can be followed by a hook.
    3.10's LOAD_METHOD / CALL_METHOD become LOAD_ATTR / CALL_FUNCTION: a bound
    method can be called with a captured argument tuple, a [method, self]
    pair cannot. The ids of those LOAD_ATTRs are added to `method_loads` (they
    are not attribute reads of the user's and are not traced).
    """
    out = []
    for item in items:
        name = item.name if isinstance(item, Instr) else None
        if name == "STORE_FAST_STORE_FAST":
            a, b = item.arg
            out += [Instr("STORE_FAST", a, location=item.location),
                    Instr("STORE_FAST", b, location=item.location)]
        elif name == "STORE_FAST_LOAD_FAST":
            a, b = item.arg
            out += [Instr("STORE_FAST", a, location=item.location),
                    Instr("LOAD_FAST", b, location=item.location)]
        elif name == "LOAD_METHOD" and not HAS_COPY:
            load = Instr("LOAD_ATTR", item.arg, location=item.location)
            method_loads.add(id(load))
            out.append(load)
        elif name == "CALL_METHOD" and not HAS_COPY:
            out.append(Instr("CALL_FUNCTION", item.arg, location=item.location))
        else:
            out.append(item)
    return out


def expand_return_const(items: list) -> list:
    """RETURN_CONST c (3.12+) -> LOAD_CONST c; RETURN_VALUE everywhere, so hooks see every return value."""
    if PY < (3, 12):
        return items
    out = []
    for item in items:
        if isinstance(item, Instr) and item.name == "RETURN_CONST":
            out += return_const_to_value(item)
        else:
            out.append(item)
    return out


# --- op mode: emission patterns -----------------------------------------------


def observe_operation(item: Instr, k: int, depth: int, consts: tuple, loc=None,
                      spec_consts: tuple = ()) -> list:
    """Run operation `item` (k operands on top, token `depth` + 1 from the top) and report it.

    The hook gets the token, the operands, the result, then `consts`, and
    returns the result: `__@trace_op_1` / `__@trace_op_2` / `__@trace_op` by
    k, `__@trace_op_attr` for attribute loads (see `tracer.op_hooks`).
    3.11+: the op runs on copies of its operands, the originals are dropped:
      [t, .., x1..xk] -> [t, .., x1..xk, hook, NULL, t, x1..xk, x1..xk]
      -> op -> [t, .., x1..xk, hook, NULL, t, x1..xk, r] -> consts -> CALL
      -> [t, .., x1..xk, r] -> SWAP k+1, POP_TOP * k -> [t, .., r]
      (3.13 stacks NULL after the hook, see `NULL_AFTER_CALLABLE`)
    3.10 (no COPY), k <= 2: the op runs on DUP_TOP(_TWO) copies, and the
    originals and the result become the hook's arguments:
      [t, .., x, y] -> [t, .., x, y, x, y] -> op -> [t, .., x, y, r]
      -> `call_hook_with_token` -> [t, .., hook(t, x, y, r, *consts)] = [t, .., r]
    3.10, k > 2: the op runs as it is, and `__@trace_op_result` gets only
    the result, with `spec_consts` (its operands' values are not seen).
    """
    if item.name == "LOAD_ATTR":
        hook = "__@trace_op_attr"
    else:
        hook = {1: "__@trace_op_1", 2: "__@trace_op_2"}.get(k, "__@trace_op")
    if HAS_COPY:
        if NULL_AFTER_CALLABLE:
            seq = [load_global_plain(hook, loc), _i("PUSH_NULL", None, loc)]
        else:
            seq = [_i("PUSH_NULL", None, loc), load_global_plain(hook, loc)]
        seq.append(_i("COPY", depth + 3, loc))                       # the token
        above = 2 + 1                                                # callable, NULL, token
        seq += [_i("COPY", k + above, loc) for _ in range(k)]        # operands for the hook
        seq += [_i("COPY", 2 * k + above, loc) for _ in range(k)]    # operands for the op
        seq.append(item)
        seq += [load_const(c, loc) for c in consts]
        seq += call(1 + k + 1 + len(consts), loc)
        seq.append(_i("SWAP", k + 1, loc))
        seq += [_i("POP_TOP", None, loc) for _ in range(k)]
        return seq
    after = depth - k + 1
    if k == 1:
        seq = [_i("DUP_TOP", None, loc), item]
    elif k == 2:
        seq = [_i("DUP_TOP_TWO", None, loc), item]
    else:
        return [item] + call_hook_with_token("__@trace_op_result", after + 1, 1, loc, extra_consts=spec_consts)
    return seq + call_hook_with_token(hook, after + k + 1, k + 1, loc, extra_consts=consts)


CAN_CAPTURE = HAS_COPY  # values below the top can be copied into a hook call


def capture_values(hook: str, positions: list, depth: int, consts: tuple, loc=None) -> list:
    """3.11+: call hook(token, *consts, *values) with copies of the stack items at
    `positions` (1 = top, counted before the call), drop its result. [] on 3.10."""
    if not HAS_COPY or not positions:
        return []
    seq = push_hook(hook, loc)
    seq.append(_i("COPY", depth + 1 + HOOK_PUSH_SIZE, loc))
    seq += [load_const(c, loc) for c in consts]
    pushed = HOOK_PUSH_SIZE + 1 + len(consts)
    for copied, position in enumerate(positions):
        seq.append(_i("COPY", position + pushed + copied, loc))
    seq += call(1 + len(consts) + len(positions), loc)
    seq.append(_i("POP_TOP", None, loc))
    return seq


def call_with_packed_args(item: Instr, depth: int, hook: str, consts: tuple, loc=None) -> Optional[list]:
    """3.10: CALL_FUNCTION n with its arguments shown to `hook` first, or None if not applicable.

    The arguments are packed (BUILD_TUPLE), the hook sees the tuple, and the
    call is made with it (CALL_FUNCTION_EX): f(*(a, b)) is the same call as
    f(a, b). Needs a plain callable below the arguments (no LOAD_METHOD pair:
    see `normalise_for_ops`).
    """
    if HAS_COPY or item.name != "CALL_FUNCTION" or not item.arg:
        return None
    n = item.arg
    packed_depth = depth - n + 2  # [.., f, T, T]
    seq = [_i("BUILD_TUPLE", n, loc), _i("DUP_TOP", None, loc)]
    seq += call_hook_with_token(hook, packed_depth + 1, 1, loc, extra_consts=consts, keep_result=False)
    seq.append(_i("CALL_FUNCTION_EX", 0, loc))
    return seq


def callable_slot(item: Instr, depth: int) -> Optional[int]:
    """3.10: how many stack items lie below the callable of call `item` run at `depth` (items before it).

    [.., f, a1..an] (CALL_FUNCTION n), [.., f, a1..an, names] (CALL_FUNCTION_KW n),
    [.., f, args(, kwargs)] (CALL_FUNCTION_EX); LOAD_METHOD / CALL_METHOD are
    gone by then (`normalise_for_ops`). None for anything else, and on 3.11+,
    where a called global is loaded with its NULL and never traced anyway.
    """
    if HAS_COPY:
        return None
    arity = call_arity(item)
    if arity is None:
        return None
    n, above = arity
    return depth - n - above - 1


# --- the inline return of a plain function in call mode ----------------------
#
# A traced plain call used to cost two hook calls; the return half is now a
# few instructions of the function itself (no Python frame), doing what a
# `leave` hook would: make the caller's call current again, and append
# ("ret", op, value) to the buffer the call was recorded in. The token layout
# it relies on is `tracer.hooks`' (see there): [op, caller, _, thread state,
# buffer, ...]; on 3.10 the thread slot is restored from the token's item 5.
TOKEN_BUFFER = 4
TOKEN_RESTORE = 1 if PY >= (3, 11) else 5


def inline_leave_and_return(loc=None) -> list:
    """[t, v] -> return v, after `t[3][1] = t[TOKEN_RESTORE]` and `t[4].append(("ret", t[0], v))`.

    A None token (the call was not traced) only returns. Nothing here can
    raise for a token made by `hooks.enter` (all items are lists it built).
    """
    from bytecode import Label
    skip = Label()
    if HAS_COPY:
        none_jump = "POP_JUMP_FORWARD_IF_NONE" if PY == (3, 11) else "POP_JUMP_IF_NONE"
        method = (_i("LOAD_METHOD", "append", loc) if PY == (3, 11)
                  else _i("LOAD_ATTR", (True, "append"), loc))
        return [
            _i("COPY", 2, loc), _i(none_jump, skip, loc),                    # [t, v]
            _i("COPY", 2, loc), load_const(TOKEN_RESTORE, loc), _i("BINARY_SUBSCR", None, loc),  # [t, v, prev]
            _i("COPY", 3, loc), load_const(3, loc), _i("BINARY_SUBSCR", None, loc),  # [t, v, prev, ts]
            load_const(1, loc), _i("STORE_SUBSCR", None, loc),               # ts[1] = prev; [t, v]
            _i("COPY", 2, loc), load_const(TOKEN_BUFFER, loc), _i("BINARY_SUBSCR", None, loc),  # [t, v, buf]
            method,                                                          # [t, v, m, self]
            load_const("ret", loc),
            _i("COPY", 5, loc), load_const(0, loc), _i("BINARY_SUBSCR", None, loc),  # [.., "ret", op]
            _i("COPY", 5, loc),                                              # [.., "ret", op, v]
            _i("BUILD_TUPLE", 3, loc),
            *call(1, loc), _i("POP_TOP", None, loc),                         # [t, v]
            _i("SWAP", 2, loc), _i("POP_TOP", None, loc), _i("RETURN_VALUE", None, loc),
            skip,
            _i("SWAP", 2, loc), _i("POP_TOP", None, loc), _i("RETURN_VALUE", None, loc),
        ]
    return [
        _i("DUP_TOP", None, loc), _i("ROT_THREE", None, loc), _i("ROT_TWO", None, loc),  # [v, v, t]
        _i("DUP_TOP", None, loc), load_const(None, loc), _i("IS_OP", 0, loc),
        _i("POP_JUMP_IF_TRUE", skip, loc),                                   # [v, v, t]
        _i("DUP_TOP", None, loc), load_const(TOKEN_RESTORE, loc), _i("BINARY_SUBSCR", None, loc),  # [v, v, t, prev]
        _i("ROT_TWO", None, loc),                                            # [v, v, prev, t]
        _i("DUP_TOP", None, loc), load_const(3, loc), _i("BINARY_SUBSCR", None, loc),  # [v, v, prev, t, ts]
        _i("ROT_TWO", None, loc), _i("ROT_THREE", None, loc),                # [v, v, t, prev, ts]
        load_const(1, loc), _i("STORE_SUBSCR", None, loc),                   # ts[1] = prev; [v, v, t]
        _i("DUP_TOP", None, loc), load_const(TOKEN_BUFFER, loc), _i("BINARY_SUBSCR", None, loc),  # [v, v, t, buf]
        _i("ROT_TWO", None, loc), load_const(0, loc), _i("BINARY_SUBSCR", None, loc),  # [v, v, buf, op]
        _i("ROT_THREE", None, loc), _i("ROT_THREE", None, loc),              # [v, buf, op, v]
        load_const("ret", loc), _i("ROT_THREE", None, loc),                  # [v, buf, "ret", op, v]
        _i("BUILD_TUPLE", 3, loc),                                           # [v, buf, rec]
        _i("ROT_TWO", None, loc), _i("LOAD_METHOD", "append", loc),          # [v, rec, m, self]
        _i("ROT_THREE", None, loc), _i("ROT_THREE", None, loc),              # [v, m, self, rec]
        _i("CALL_METHOD", 1, loc), _i("POP_TOP", None, loc),                 # [v]
        _i("RETURN_VALUE", None, loc),
        skip,                                                                # [v, v, t]
        _i("POP_TOP", None, loc), _i("POP_TOP", None, loc), _i("RETURN_VALUE", None, loc),
    ]
