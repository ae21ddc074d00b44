"""Stack depth before every instruction of an abstract `bytecode.Bytecode`.

The rewriter keeps the frame's token at the bottom of the value stack and
reaches it with `COPY depth` (3.11+) or rotations (3.10), so it must know
how deep the stack is at each instrumented instruction. `bytecode` computes
only the maximum; this walks every path once (linear in code size).

Exception handlers of 3.11+ (`TryBegin` regions) start at the depth the
exception table records (kept by `Bytecode.from_code(...,
conserve_exception_block_stackdepth=True)`), plus lasti and the exception.
"""
from __future__ import annotations

from bytecode import Instr, Label, TryBegin, TryEnd


class StackAnalysisError(Exception):
    """The code's stack could not be followed (inconsistent depths at a join)."""


def depths_before(instrs: list, start: int = 0) -> dict[int, int]:
    """Map index in `instrs` -> stack depth before that item, for every item reachable from `start`.

    The stack is taken as empty at `start` (the body start, after the prologue).
    """
    label_index = {}
    for i, item in enumerate(instrs):
        if isinstance(item, Label):
            label_index[item] = i
    depths: dict[int, int] = {}
    work = [(start, 0)]
    started: set = set()
    # 3.11+: a region's handler starts at the table's depth, plus lasti and the exception
    for item in instrs:
        if isinstance(item, TryBegin) and item.target not in started:
            if not isinstance(item.stack_depth, int):
                raise StackAnalysisError("exception table depths were not kept (conserve_exception_block_stackdepth)")
            started.add(item.target)
            work.append((label_index[item.target],
                         item.stack_depth + (1 if item.push_lasti else 0) + 1))
    _walk(instrs, label_index, depths, work)
    return depths


def _walk(instrs: list, label_index: dict, depths: dict, work: list) -> None:
    n = len(instrs)
    while work:
        i, depth = work.pop()
        while i < n:
            seen = depths.get(i)
            if seen is not None:
                if seen != depth:
                    raise StackAnalysisError(
                        f"stack depth {seen} and {depth} meet at instruction {i}")
                break
            depths[i] = depth
            item = instrs[i]
            if not isinstance(item, Instr):  # Label, TryBegin, TryEnd, SetLineno
                i += 1
                continue
            if item.has_jump():
                work.append((label_index[item.arg], depth + item.stack_effect(jump=True)))
                if item.is_uncond_jump():
                    break
                depth += item.stack_effect(jump=False)
                i += 1
                continue
            if item.is_final():
                break
            depth += item.stack_effect(jump=False)
            i += 1


_BLOCK_SETUPS = frozenset({"SETUP_FINALLY", "SETUP_WITH", "SETUP_ASYNC_WITH"})
CO_MAXBLOCKS = 20  # CPython's fixed per-frame block stack (3.10): one more is a fatal error


def max_block_depth(instrs: list, start: int = 0) -> int:
    """3.10: the deepest the frame's block stack gets (try/with blocks and exception handlers).

    The rewriter adds one block around the whole body; a frame that already
    reaches `CO_MAXBLOCKS` would then overflow CPython's fixed block stack,
    which aborts the interpreter, so such code must be left alone.
    """
    label_index = {item: i for i, item in enumerate(instrs) if isinstance(item, Label)}
    seen: dict[int, int] = {}
    deepest = 0
    work = [(start, 0)]
    n = len(instrs)
    while work:
        i, depth = work.pop()
        while i < n:
            if seen.get(i, -1) >= depth:
                break
            seen[i] = depth
            deepest = max(deepest, depth)
            item = instrs[i]
            if not isinstance(item, Instr):
                i += 1
                continue
            name = item.name
            if name in _BLOCK_SETUPS:
                # the handler runs with an EXCEPT_HANDLER block in place of this one
                work.append((label_index[item.arg], depth + 1))
                depth += 1
            elif name in ("POP_BLOCK", "POP_EXCEPT"):
                depth = max(0, depth - 1)
            elif item.has_jump():
                work.append((label_index[item.arg], depth))
                if item.is_uncond_jump():
                    break
            elif item.is_final():
                break
            i += 1
    return deepest
