"""Stack depth before every instruction of an abstract `bytecode.Bytecode`.

The rewriter keeps the frame's token at the bottom of the value stack and
reaches it with `COPY depth` (3.11+) or rotations (3.10), so it must know
how deep the stack is at each instrumented instruction. `bytecode` computes
only the maximum; this walks every path once (linear in code size).

Exception handlers of 3.11+ (`TryBegin` regions) start at the lowest depth
found in the regions that target them, plus lasti and the exception: the
same rule `bytecode` applies when it writes the exception table. (The
`stack_depth` that `Bytecode.from_code` puts on a `TryBegin` is not the
table's value, and one table entry may be split into several regions.)
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
    # handler label -> (push_lasti, indices of the instructions its regions cover)
    regions: dict = {}
    current = None
    for i, item in enumerate(instrs):
        if isinstance(item, TryBegin):
            current = item
            regions.setdefault(item.target, (item.push_lasti, []))
        elif isinstance(item, TryEnd):
            if current is not None and item.entry is current:
                current = None
        elif isinstance(item, Instr) and current is not None:
            regions[current.target][1].append(i)

    depths: dict[int, int] = {}
    work = [(start, 0)]
    started: set = set()
    while True:
        _walk(instrs, label_index, depths, work)
        for target, (push_lasti, covered) in regions.items():
            if target in started or not isinstance(target, Label):
                continue
            seen = [depths[i] for i in covered if i in depths]
            if seen:
                started.add(target)
                work.append((label_index[target], min(seen) + (1 if push_lasti else 0) + 1))
        if not work:
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
