"""Call-level instrumentation of one code object.

What the rewritten code does (stack pictures bottom -> top, `t` = token):

- entry (after RESUME / GEN_START): `t = __@trace_enter(func_id, (args...))`;
  `t` stays at the bottom of the value stack for the frame's whole life.
  Nothing else in the code reaches below its own items, so the function's
  own stack discipline is untouched and `locals()` sees no new name.
- every return of a plain function: inline bytecode does what a leave hook
  would (`compat.inline_leave_and_return`), no hook call on the way out; a
  generator's return: `[t, v] -> [__@trace_gen_leave(t, v)]` then RETURN_VALUE
  (op mode: `__@trace_op_leave` for every return).
- every plain `yield v`: the value goes through `__@trace_suspend(t, v)` and,
  after the frame resumes, `__@trace_resume(t)` runs; delegation yields of
  `yield from` / `await` (3.11+) go through `__@trace_pause` / `__@trace_resume`.
- an exception leaving the frame: a handler covering every instruction not
  already covered by the function's own handlers calls `__@trace_fail(t, exc)`
  and re-raises (the traceback is untouched: RERAISE adds no entry).
- loads of globals and plain attributes pass through `__@trace_read`, loads
  of closure variables (`LOAD_DEREF`) through `__@trace_read_cell`, so that
  parameter reads are recorded (the hooks filter by name, then identity).

The original instructions themselves are never replaced: hooks observe
(see bytecode-pitfalls.md, "Observe, do not interpose").
"""
from __future__ import annotations

from typing import Optional

from bytecode import Bytecode, Instr, Label, TryBegin, TryEnd

from tracer.rewrite import compat
from tracer.rewrite.stack import CO_MAXBLOCKS, depths_before, max_block_depth

class RewriteError(Exception):
    """A code object could not be instrumented; it is left as it was."""


def argument_names(code) -> list[str]:
    """Names of the code's parameters, in order (positional, *args, keyword-only, **kwargs)."""
    n = code.co_argcount + code.co_kwonlyargcount
    if code.co_flags & 0x04:  # CO_VARARGS
        n += 1
    if code.co_flags & 0x08:  # CO_VARKEYWORDS
        n += 1
    return list(code.co_varnames[:n])


def is_generator_code(code) -> bool:
    return bool(code.co_flags & (0x20 | 0x80 | 0x100 | 0x200))


def _next_instr(items: list, i: int) -> Optional[Instr]:
    for j in range(i + 1, len(items)):
        if isinstance(items[j], Instr):
            return items[j]
    return None


def _entry_index(items: list) -> int:
    """Index of the first item after the prologue (where the body really starts)."""
    for i, item in enumerate(items):
        if isinstance(item, Instr):
            if item.name in compat.BODY_START_OPS and (
                    item.name != "RESUME" or compat.resume_kind(item) == 0):
                return i + 1
            if not compat.HAS_EXCEPTION_TABLE:
                return 0 if item.name != "GEN_START" else i + 1
    raise RewriteError("no RESUME instruction found")


def _last_real_index(out: list) -> int:
    for j in range(len(out) - 1, -1, -1):
        if isinstance(out[j], Instr):
            return j
    return -1


def _location_after(items: list, i: int):
    for j in range(i, len(items)):
        item = items[j]
        if isinstance(item, Instr) and item.lineno is not None:
            return item.location
    return None


class CallInstrumenter:
    """Rewrite one code object for call mode. `extra` lets op mode add its own edits."""

    def __init__(self, code, *, func_id: int, module: str, qualname: Optional[str] = None,
                 trace_reads: bool = True):
        self.code = code
        self.func_id = func_id
        self.module = module
        # The function's real qualname: closure-variable parameters are looked
        # up by the qualname of the function that reads them (params.by_closure).
        self.scope_qualname = qualname or getattr(code, "co_qualname", code.co_name)
        self.trace_reads = trace_reads
        self.enter_hook = "__@trace_enter"
        self.gen_enter_hook = "__@trace_gen_enter"  # a generator's token is updated on resume
        # None: the return half is inline bytecode (compat.inline_leave_and_return)
        self.leave_hook: Optional[str] = None
        self.gen_leave_hook = "__@trace_gen_leave"
        self.fail_hook = "__@trace_fail"
        self.suspend_hook = "__@trace_suspend"
        self.pause_hook = "__@trace_pause"
        self.resume_hook = "__@trace_resume"
        self.skip: set[int] = set()  # indices of items an `edit` already emitted

    # -- helpers op mode overrides ------------------------------------------
    def entry_call(self, loc) -> list:
        """Instructions that push the token."""
        cells = set(self.code.co_cellvars)
        names = argument_names(self.code)
        seq = compat.push_hook(self.enter_hook, loc)
        seq.append(compat.load_const(self.func_id, loc))
        seq += [compat.load_arg(n, n in cells, loc) for n in names]
        # one tuple argument, not *args: a call with exactly the parameters
        # the hook declares takes the interpreter's fast path (3.11+)
        seq.append(Instr("BUILD_TUPLE", len(names), location=loc))
        seq += compat.call(2, loc)
        return seq

    def edit(self, items: list, i: int, item, depth: Optional[int], out: list) -> bool:
        """Op-mode hook point: emit replacement for items[i] into `out`; True if handled."""
        return False

    def analyse(self, items: list, start: int, depths: dict) -> None:
        """Op-mode hook point: static analysis before rewriting."""

    def prepare(self, items: list, start: int, depths: dict) -> list:
        """Op-mode hook point: normalise the instruction list before rewriting."""
        return items

    # -- the rewrite ----------------------------------------------------------
    def rewrite(self):
        bc = compat.bytecode_from_code(self.code)
        items = compat.expand_return_const(list(bc))
        start = _entry_index(items)
        items = self.prepare(items, start, None)
        if compat.HAS_BLOCK_STACK and max_block_depth(items, start) >= CO_MAXBLOCKS:
            raise RewriteError(f"blocks nested {CO_MAXBLOCKS} deep: no room for the tracer's own block")
        depths = depths_before(items, start)
        self.depths = depths
        self.items = items
        self.analyse(items, start, depths)
        generator = is_generator_code(self.code)
        leave_hook = self.gen_leave_hook if generator else self.leave_hook
        if generator:
            self.enter_hook = self.gen_enter_hook
        handler = Label()
        out: list = list(items[:start])
        entry_loc = _location_after(items, start)
        theirs: Optional[TryBegin] = None
        for item in items[:start]:  # 3.12+ generators open a region before RESUME
            if isinstance(item, TryBegin):
                theirs = item
            elif isinstance(item, TryEnd) and item.entry is theirs:
                theirs = None
        shifted: set = set()

        def shift(tb: TryBegin) -> None:
            # every region of the function now sits one item higher: the token
            if id(tb) not in shifted:
                shifted.add(id(tb))
                tb.stack_depth += 1

        if theirs is not None:
            shift(theirs)
            # Close it while the token is being pushed: its (shifted) depth
            # counts the token, which is not on the stack yet.
            out.append(TryEnd(theirs))
        out += self.entry_call(entry_loc)
        if compat.HAS_EXCEPTION_TABLE:
            # Our handler runs with the token alone below lasti and the exception
            # (depth 1). The anchor region makes that the handler's entry depth for
            # the stack-size computation too, even when all our other regions only
            # cover code that runs deeper (the function's own handlers).
            anchor = TryBegin(handler, True, 1)
            out += [anchor, Instr("NOP", location=entry_loc), TryEnd(anchor)]
        else:
            out.append(Instr("SETUP_FINALLY", handler))
        # Exception-table regions (3.11+). `theirs` is the function's own region
        # being copied (the original TryBegin), `active` the TryBegin currently
        # open in `out` (theirs, a re-opened copy of theirs, or one of ours).
        active: Optional[TryBegin] = None
        pending_resume: Optional[int] = None  # depth of a yield whose RESUME comes next

        last_real = len(out) - 1  # index in `out` of the last real instruction emitted
        for i in range(start, len(items)):
            if isinstance(items[i - 1], Instr) and i > start:
                last_real = _last_real_index(out)
            if i in self.skip:
                continue
            item = items[i]
            depth = depths.get(i)
            if isinstance(item, TryBegin):
                if active is not None:
                    out.append(TryEnd(active))
                shift(item)
                theirs = active = item
                out.append(item)
                continue
            if isinstance(item, TryEnd):
                if item.entry is theirs:
                    if active is not None:
                        out.append(TryEnd(active))
                    theirs = active = None
                continue
            if not isinstance(item, Instr):
                out.append(item)
                continue
            if compat.HAS_EXCEPTION_TABLE and active is None:
                active = TryBegin(handler, True, 1) if theirs is None else theirs.copy()
                out.append(active)
            if depth is None:  # unreachable: keep as is
                out.append(item)
                continue
            loc = item.location
            name = item.name
            if name == "RETURN_VALUE":
                if depth != 1:
                    raise RewriteError(f"RETURN_VALUE at stack depth {depth}, expected 1")
                if active is not None:
                    # The leave hook consumes the token: bytecode would take the
                    # region's lowest depth for its handler, so close the region first.
                    out.append(TryEnd(active))
                    active = None
                if not compat.HAS_EXCEPTION_TABLE:
                    # likewise on 3.10: leave our block before the hook consumes the token
                    out.append(Instr("POP_BLOCK", location=loc))
                if leave_hook is None:
                    # a plain function in call mode: the return half of the trace is inline
                    out += compat.inline_leave_and_return(loc)
                    continue
                out += compat.call_hook_on_top(leave_hook, 2, loc)
                out.append(item)
                continue
            if name == "YIELD_VALUE":
                delegating = False
                if compat.HAS_EXCEPTION_TABLE:
                    nxt = _next_instr(items, i)
                    delegating = nxt is None or nxt.name != "RESUME" or compat.resume_kind(nxt) != 1
                hook = self.pause_hook if delegating else self.suspend_hook
                seq = compat.call_hook_with_token(hook, depth + 1, 1, loc)
                # Put the hook right after the instruction that pushed the value,
                # before any region boundary in between: inside the yield's own
                # region, consuming the value would lower that region's handler
                # depth. An async generator wraps the value right before
                # YIELD_VALUE: report it unwrapped.
                at = last_real + 1
                if compat.is_async_gen_wrap(out[last_real]):
                    at = last_real
                out[at:at] = seq
                out.append(item)
                if compat.HAS_EXCEPTION_TABLE:
                    pending_resume = depth  # stack after RESUME: [t, .., sent] = depth + 1 items
                else:
                    out += compat.call_hook_with_token(self.resume_hook, depth + 1, 0, loc,
                                                       keep_result=False)
                continue
            if name == "YIELD_FROM" and compat.YIELD_FROM_IS_OPAQUE:
                # runs once the delegation is over: this generator is current again
                out.append(item)
                after = depth + item.stack_effect(jump=False)
                out += compat.call_hook_with_token(self.resume_hook, after + 1, 0, loc, keep_result=False)
                continue
            if name == "RESUME" and pending_resume is not None:
                out.append(item)
                out += compat.call_hook_with_token(self.resume_hook, pending_resume + 1, 0, loc,
                                                   keep_result=False)
                pending_resume = None
                continue
            if self.edit(items, i, item, depth, out):
                continue
            out.append(item)
            if self.trace_reads:
                read = self._read_hook(item)
                if read is not None:
                    # after the load: the function's own items, the token below them
                    after = depth + item.stack_effect(jump=False)
                    out += compat.call_hook_with_token(read[0], after + 1, 1, loc, extra_consts=(read[1],))
        if active is not None:
            out.append(TryEnd(active))
        out.append(handler)
        out += compat.exception_handler(self.fail_hook, None)

        new = Bytecode(out)
        new._copy_attr_from(bc)
        return compat.bytecode_to_code(new, [x for x in out if isinstance(x, TryBegin)])

    def _read_hook(self, item: Instr) -> Optional[tuple[str, object]]:
        """(hook, key) when `item` loads a value that may be a parameter, else None."""
        name = item.name
        if name == "LOAD_GLOBAL":
            if compat.load_global_pushes_null(item):
                return None  # a callable: parameters are plain values
            # (3.10 cannot tell a callable load from a value load: all go through the hook)
            return "__@trace_read", (self.module, compat.global_name(item))
        if name == "LOAD_ATTR":
            attr = compat.attr_name(item)
            return None if attr is None else ("__@trace_read", "." + attr)
        var = compat.deref_name(item)
        if var is not None:
            return "__@trace_read_cell", (self.module, self.scope_qualname, var)
        return None


def instrument_call_mode(code, *, func_id: int, module: str, qualname: Optional[str] = None):
    """Return `code` rewritten for call mode (see the module docstring)."""
    return CallInstrumenter(code, func_id=func_id, module=module, qualname=qualname).rewrite()
