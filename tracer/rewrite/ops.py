"""Op-level instrumentation: the operations inside a marked function become operators.

On top of everything call mode does (`calls.CallInstrumenter`), each
binary / in-place / unary operation, comparison, subscript, plain attribute
load, f-string piece, call, global load and closure-variable load inside the
marked function reports itself to a hook (a load of a parameter then flows
on as the parameter's node), and every store to a local variable updates
the frame's shadow provenance (`op_hooks.FrameState`).

Provenance is static: a linear pass over the original instructions keeps a
symbolic stack saying where each stack item came from, a constant
("c", value), a local ("l", name), the result of a traced site ("s", site)
or somewhere untracked ("?",). At a jump target the symbolic stack is reset
to untracked (two paths may meet there: `f(a if c else b)`), which loses an
edge but never invents one.

Four emission patterns (stack pictures bottom -> top; `t` = the token):

A  operations with k object operands (3.11+): the op runs on copies of its
   operands and the hook gets the operands and the result:
   [x1..xk] -> [x1..xk, <hook>, t, x1..xk, x1..xk] -> OP -> [.., t, x1..xk, r]
   -> site, keys, opname, dest -> CALL -> [x1..xk, r] -> drop the originals -> [r]
   (3.10, no COPY: DUP_TOP(_TWO), OP, and the originals and the result
   become the hook's arguments.)
   The sequences themselves are in `compat` (`observe_operation`,
   `capture_values`, `call_with_packed_args`).
B  calls: argument values are captured before the call (never the callable
   or its NULL slot: copying a NULL crashes), the result is routed through
   a hook after it. A call of a marked function links to that call's `ret`.
C  `x = a op b` / `x op= b` followed by STORE_FAST: the op and the store
   run untouched (CPython's in-place string concatenation needs exactly
   that), then the hook reads the stored local.
S  any other STORE_FAST: after the store, the hook is told where the value
   came from and updates the shadow.

A STORE_FAST right after an A or B site (or a global / closure-variable
load) has no hook of its own: the site's hook is told the local's name
(`dest` / `name`) and puts the result's Ref there itself, and the store
runs untouched (`x = a[i]` is one hook call, not two).
"""
from __future__ import annotations

import linecache
from typing import Optional

from bytecode import Instr, Label

from tracer.ids import site_id
from tracer.rewrite import compat
from tracer.rewrite.calls import CallInstrumenter, argument_names
from tracer.rewrite.compat import call_arity, operation

UNTRACKED = ("?",)
NESTED_NAMES = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})


def _key(entry: tuple):
    """Where the Ref of an operand from `entry` is kept in `FrameState.refs`, None if nowhere."""
    return entry[1] if entry[0] in ("l", "s") else None


def _value_keys(spec: tuple) -> tuple:
    """`_key` per entry, and a constant as `(value,)`: for hooks that may not see the values."""
    return tuple((entry[1],) if entry[0] == "c" else _key(entry) for entry in spec)


def _stack_change(instr: Instr) -> tuple[int, int]:
    pre, post = instr.pre_and_post_stack_effect(jump=False)
    if pre < 0:
        return -pre, post
    return 0, pre + post


class OpInstrumenter(CallInstrumenter):
    """Rewrite one code object for op mode (see the module docstring)."""

    def __init__(self, code, *, func_id: int, module: str, qualname: str):
        super().__init__(code, func_id=func_id, module=module, qualname=qualname, trace_reads=False)
        self.qualname = qualname  # site ids are derived from it (nested code: "f.<genexpr>")
        self.enter_hook = "__@trace_op_enter"
        self.gen_enter_hook = "__@trace_op_gen_enter"
        self.leave_hook = "__@trace_op_leave"
        self.sites: dict[int, tuple[str, int, int, str]] = {}
        self.plans: dict[int, tuple] = {}
        self._occurrences: dict = {}
        self.method_loads: set[int] = set()  # ids of LOAD_ATTRs that were LOAD_METHOD (not traced)
        self.fused_stores: set[int] = set()  # indices of STORE_FASTs whose value's hook updates the shadow

    # -- nested comprehensions belong to this function ----------------------
    def rewrite(self):
        consts = list(self.code.co_consts)
        changed = False
        for i, const in enumerate(consts):
            if hasattr(const, "co_code") and const.co_name in NESTED_NAMES:
                nested = NestedOpInstrumenter(const, func_id=self.func_id, module=self.module,
                                              qualname=f"{self.qualname}.{const.co_name}", owner=self)
                consts[i] = nested.rewrite()
                changed = True
        if changed:
            self.code = self.code.replace(co_consts=tuple(consts))
        return super().rewrite()

    def entry_call(self, loc) -> list:
        cells = set(self.code.co_cellvars)
        names = argument_names(self.code)
        seq = compat.push_hook(self.enter_hook, loc)
        seq.append(compat.load_const(self.func_id, loc))
        seq.append(compat.load_const(tuple(None if n in cells else n for n in names), loc))
        seq += [compat.load_arg(n, n in cells, loc) for n in names]
        seq += compat.call(2 + len(names), loc)
        return seq

    # -- normalisation: split 3.13 superinstructions that store -------------
    def prepare(self, items: list, start: int, depths) -> list:
        return compat.normalise_for_ops(items, self.method_loads)

    # -- static analysis ----------------------------------------------------
    def _site(self, opname: str, instr: Instr) -> int:
        line = instr.lineno or self.code.co_firstlineno
        loc = instr.location
        col = getattr(loc, "col_offset", None) or 0
        key = (opname, line, col)
        n = self._occurrences.get(key, 0)
        self._occurrences[key] = n + 1
        sid = site_id(self.module, self.qualname, opname, line, col, n)
        self.sites[sid] = (opname, line, col, self._source_text(loc, line))
        return sid

    def _source_text(self, loc, line: int) -> str:
        lines = linecache.getlines(self.code.co_filename)
        if not lines or line > len(lines):
            return ""
        end_line = getattr(loc, "end_lineno", None) or line
        col = getattr(loc, "col_offset", None)
        end_col = getattr(loc, "end_col_offset", None)
        if col is None or end_col is None:
            return lines[line - 1].strip()[:200]
        if end_line == line:
            text = lines[line - 1].encode("utf-8")[col:end_col].decode("utf-8", "replace")
        else:
            first = lines[line - 1].encode("utf-8")[col:].decode("utf-8", "replace")
            text = first + "".join(lines[line:end_line - 1]) + \
                lines[end_line - 1].encode("utf-8")[:end_col].decode("utf-8", "replace")
        return text.strip()[:200]

    def analyse(self, items: list, start: int, depths: dict) -> None:
        cleared = {it.arg for it in items if isinstance(it, Instr) and it.name == "LOAD_FAST_AND_CLEAR"}
        sym: Optional[list] = None
        run_sym: Optional[list] = None
        for i in range(start, len(items)):
            if i in self.skip:
                continue  # the store of an "x = a op b" planned with its op
            item = items[i]
            depth = depths.get(i)
            if depth is None:
                sym = None
                continue
            if run_sym is None and (isinstance(item, Label) or sym is None or len(sym) != depth):
                sym = [UNTRACKED] * depth
            if not isinstance(item, Instr):
                continue
            name = item.name
            pushed = None
            if id(item) in self.method_loads or compat.is_method_load(item):
                # obj.method(...): the receiver becomes an input of the call
                receiver = sym.pop() if sym else UNTRACKED
                pushes = 1 + item.stack_effect(jump=False)
                sym.extend([("m", receiver)] + [UNTRACKED] * (pushes - 1))
                continue
            op = operation(item)
            arity = call_arity(item) if op is None else None
            if op is not None:
                opname, k = op
                site = self._site(opname, item)
                spec = tuple(sym[len(sym) - k:]) if k else ()
                nxt = items[i + 1] if i + 1 < len(items) else None
                stores = (isinstance(nxt, Instr) and nxt.name in compat.STORES_AFTER_OP
                          and k == 2 and (name == "BINARY_OP" or name.startswith(("BINARY_", "INPLACE_")))
                          and name not in ("BINARY_SUBSCR", "BINARY_SLICE"))
                if stores:
                    target = nxt.arg if nxt.name == "STORE_FAST" else None
                    if target in cleared:
                        target = None
                    self.plans[i] = ("C", k, site, spec, opname, nxt, target)
                    self.skip.add(i + 1)
                    # the store happens too: simulate both
                    del sym[len(sym) - k:]
                    continue
                self.plans[i] = ("A", k, site, spec, opname, self._fused_store(items, i, cleared))
                del sym[len(sym) - k:]
                sym.append(("s", site))
                continue
            if name in ("KW_NAMES", "PRECALL"):
                # glued to their CALL; 3.11's PRECALL nominally pops the arguments,
                # so keep the stack as it is before the call run
                if run_sym is None:
                    run_sym = list(sym)
                continue
            if arity is not None:
                n, above = arity
                site = self._site("call", item)
                before = run_sym if run_sym is not None else sym
                run_sym = None
                spec = tuple(before[len(before) - n - above:len(before) - above])
                receiver = None
                for slot in before[max(0, len(before) - n - above - 2):len(before) - n - above]:
                    if slot[0] == "m":
                        receiver = slot[1]
                run_start = i
                while run_start - 1 >= start and isinstance(items[run_start - 1], Instr) and \
                        items[run_start - 1].name in ("KW_NAMES", "PRECALL"):
                    run_start -= 1
                self.plans[("pre", run_start)] = ("Bpre", n, above, site, spec)
                self.plans[i] = ("B", site, spec, "call", receiver, self._fused_store(items, i, cleared))
                after = depth + item.stack_effect(jump=False)
                sym = before[:max(0, after - 1)] + [("s", site)]
                continue
            if name == "LOAD_GLOBAL" and not compat.load_global_pushes_null(item):
                if self._only_called(items, i, depths):
                    # 3.10's `f(...)` of a global f: not an input of anything, as on
                    # 3.11+ (where it is loaded with a NULL): no hook
                    sym.append(UNTRACKED)
                    continue
                site = self._site("global", item)
                self.plans[i] = ("G", site, (self.module, compat.global_name(item)), "__@trace_op_global",
                                 self._fused_store(items, i, cleared))
                sym.append(("s", site))
                continue
            var = compat.deref_name(item)
            if var is not None:  # a closure variable: a parameter read if it is one (params.by_closure)
                site = self._site("closure", item)
                self.plans[i] = ("G", site, (self.module, self.scope_qualname, var), "__@trace_op_cell",
                                 self._fused_store(items, i, cleared))
                sym.append(("s", site))
                continue
            if name == "STORE_FAST":
                source = sym[-1] if sym else UNTRACKED
                if item.arg in cleared or i in self.fused_stores:
                    self.plans[i] = ("F", item.arg)
                else:
                    self.plans[i] = ("S", item.arg, source)
                sym.pop()
                continue
            if name in ("LOAD_FAST", "LOAD_FAST_CHECK"):
                pushed = [("l", item.arg)]
            elif name == "LOAD_FAST_LOAD_FAST":
                pushed = [("l", item.arg[0]), ("l", item.arg[1])]
            elif name == "LOAD_CONST":
                pushed = [("c", item.arg)]
            elif name == "COPY":
                pushed = [sym[-item.arg]]
            elif name == "SWAP":
                n = item.arg
                sym[-1], sym[-n] = sym[-n], sym[-1]
            elif name == "DUP_TOP":
                pushed = [sym[-1]]
            elif name == "DUP_TOP_TWO":
                pushed = [sym[-2], sym[-1]]
            elif name in ("ROT_TWO", "ROT_THREE", "ROT_FOUR", "ROT_N"):
                n = {"ROT_TWO": 2, "ROT_THREE": 3, "ROT_FOUR": 4}.get(name, item.arg)
                sym[len(sym) - n:] = [sym[-1]] + sym[len(sym) - n:-1]
            if pushed is not None:
                sym.extend(pushed)
            elif name not in ("SWAP", "ROT_TWO", "ROT_THREE", "ROT_FOUR", "ROT_N"):
                pops, pushes = _stack_change(item)
                del sym[max(0, len(sym) - pops):]
                sym.extend([UNTRACKED] * pushes)
            if item.is_uncond_jump() or item.is_final():
                sym = None

    @staticmethod
    def _only_called(items: list, i: int, depths: dict) -> bool:
        """True if the value items[i] pushes is only ever the callable of a call, in straight-line code.

        Scans on until the first instruction that reaches its stack slot:
        that must be a call whose callable it is (`compat.callable_slot`).
        Anything else reaching it (a copy, a rotation, an attribute load on
        it...), a label, a jump or an exception-region boundary first: False.
        """
        slot = depths.get(i)
        if slot is None:
            return False
        for j in range(i + 1, len(items)):
            item = items[j]
            depth = depths.get(j)
            if not isinstance(item, Instr) or depth is None or item.has_jump() or item.is_final():
                return False
            if compat.callable_slot(item, depth) == slot:
                return True
            pops, _ = _stack_change(item)
            if depth - pops <= slot:
                return False
        return False

    def _fused_store(self, items: list, i: int, cleared: set) -> Optional[str]:
        """The local the value pushed by items[i] is stored into right after, else None.

        Its hook then does the store's part of the shadow (the store is
        marked "F"). Not for a variable that a comprehension saves and
        restores around itself (LOAD_FAST_AND_CLEAR, 3.12+): those are never
        shadowed.
        """
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(nxt, Instr) and nxt.name == "STORE_FAST" and nxt.arg not in cleared:
            self.fused_stores.add(i + 1)
            return nxt.arg
        return None

    # -- emission -----------------------------------------------------------
    def edit(self, items: list, i: int, item, depth: Optional[int], out: list) -> bool:
        loc = item.location
        pre = self.plans.get(("pre", i))
        if pre is not None:
            _, n, above, site, spec = pre
            positions = [n + above - m for m in range(n)]  # the arguments, bottom first
            out += compat.capture_values("__@trace_op_capture", positions, depth, (site, _value_keys(spec)), loc)
        plan = self.plans.get(i)
        if not plan:
            return False
        kind = plan[0]
        if kind == "A":
            _, k, site, spec, opname, target = plan
            keys = tuple(_key(entry) for entry in spec)
            dest = site if target is None else target  # where the hook puts the result's Ref
            out += compat.observe_operation(item, k, depth, (site, keys, opname, dest), loc,
                                            spec_consts=(site, spec, opname, target))
        elif kind == "C":
            out += self._apply_then_store(plan, item, depth, loc)
        elif kind == "B":
            _, site, spec, opname, receiver, target = plan
            keys = _value_keys(spec)
            packed = compat.call_with_packed_args(item, depth, "__@trace_op_capture_packed", (site, keys), loc)
            out += packed if packed is not None else [item]
            after = depth + item.stack_effect(jump=False)
            receiver_key = None if receiver is None else _value_keys((receiver,))[0]
            dest = site if target is None else target
            out += compat.call_hook_with_token("__@trace_op_call", after + 1, 1, loc,
                                               extra_consts=(site, keys, opname, receiver_key, dest))
        elif kind == "G":
            _, site, key, hook, target = plan
            out.append(item)
            dest = site if target is None else target
            out += compat.call_hook_with_token(hook, depth + 2, 1, loc, extra_consts=(site, key, dest))
        elif kind == "S":
            _, name, source = plan
            out.append(item)
            out.append(Instr("LOAD_FAST", name, location=loc))
            out += compat.call_hook_with_token("__@trace_op_store", depth + 1, 1, loc,
                                               extra_consts=(name, _key(source)), keep_result=False)
        elif kind == "F":
            # untouched: the hook of the value's site already updated the shadow,
            # or a comprehension variable is restored (may be NULL, never shadowed)
            out.append(item)
        else:
            return False
        return True

    def _apply_then_store(self, plan: tuple, item: Instr, depth: int, loc) -> list:
        """Pattern C: `x = a op b` runs untouched; untracked operands are captured before."""
        _, k, site, spec, opname, store, target = plan
        keys = _value_keys(spec)
        positions = [k - m for m, entry in enumerate(spec) if entry[0] == "?"]
        seq = compat.capture_values("__@trace_op_capture", positions, depth, (site, None), loc)
        seq += [item, store]
        load = "LOAD_FAST" if store.name == "STORE_FAST" else "LOAD_DEREF"
        seq.append(Instr(load, store.arg, location=loc))
        after = depth - k + 1  # the stored value pushed again
        seq += compat.call_hook_with_token("__@trace_op_stored", after + 1, 1, loc,
                                           extra_consts=(site, keys, opname, target), keep_result=False)
        return seq


class NestedOpInstrumenter(OpInstrumenter):
    """A comprehension or generator expression inside an op-mode function: ops only, no call."""

    def __init__(self, code, *, func_id: int, module: str, qualname: str, owner: OpInstrumenter):
        super().__init__(code, func_id=func_id, module=module, qualname=qualname)
        # its real qualname, the key of the closure variables it reads (3.10: derived as the compiler does)
        self.scope_qualname = getattr(code, "co_qualname", None) or f"{owner.scope_qualname}.<locals>.{code.co_name}"
        self.sites = owner.sites
        self._occurrences = owner._occurrences
        self.enter_hook = self.gen_enter_hook = "__@trace_op_nested_enter"
        self.leave_hook = self.gen_leave_hook = "__@trace_nested_pass"
        self.suspend_hook = self.pause_hook = "__@trace_nested_pass"
        self.fail_hook = "__@trace_nested_fail"
        self.resume_hook = "__@trace_nested_resume"

    def entry_call(self, loc) -> list:
        return compat.push_hook(self.enter_hook, loc) + compat.call(0, loc)


__all__ = ["OpInstrumenter", "NestedOpInstrumenter"]
