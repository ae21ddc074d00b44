"""Which operations of a feedback subgraph become lines of #Code, and in which order.

- An operation with traced operations inside it (a marked call in op mode,
  or a marked call that called other marked functions) is shown through
  them, as opto shows the operators inside a function it did not bundle.
- A call of a trainable function is one line whatever it did inside (its
  body is the variable the LLM edits).
- An operation whose output nothing shown produces stays a line, so every
  value mentioned has a producer or is an input.
- Order: execution order (op ids are handed out in execution order),
  respecting data flow; linear apart from a heap of ready operations.
"""
from __future__ import annotations

import heapq
from typing import Any

import networkx as nx

from optimizer_service.step_types import ParamState


def code_variables(params: dict[str, ParamState], var_names: dict[str, str]) -> dict[int, str]:
    """Function id -> name of the code variable holding that function's source.

    The daemon gives every source parameter the id of the function it is the
    source of (`ParamState.func_id`, the FunctionDef id that call nodes carry
    as ``func["id"]``), so a call is matched to its code variable exactly:
    never by name, which two modules (or two classes) may share. A source
    parameter without a function id is still shown as a variable; no call
    runs it as far as the optimizer can tell.
    """
    return {state.func_id: var_names[pname] for pname, state in params.items()
            if state.func_id is not None and (state.kind == "source" or state.type == "code")}


def code_variable_of(func: dict | None, lookup: dict[int, str]) -> str | None:
    """The code variable a call of `func` (a FunctionDef dict) runs, if its source is trainable."""
    if not lookup or not func:
        return None
    return lookup.get(func.get("id"))  # type: ignore[arg-type]


def shown_operations(graph: nx.DiGraph, op_keys: list, code_lookup: dict[int, str]) -> set:
    """The operations of `op_keys` that become lines of #Code (see the module docstring)."""
    # networkx's own dicts (node attributes, successors, predecessors) are
    # read directly: a view object per access costs more than the work here.
    nodes, succ, pred = graph._node, graph._succ, graph._pred
    op_set = set(op_keys)
    collapsing: dict[Any, bool] = {}

    def collapses(op: Any) -> bool:
        # A call that runs trainable code is one line: what it did inside is hidden.
        known = collapsing.get(op)
        if known is None:
            attrs = nodes[op]
            known = collapsing[op] = attrs.get("kind") == "call" and \
                code_variable_of(attrs.get("func"), code_lookup) is not None
        return known

    hidden: dict[Any, bool] = {}
    for op in op_keys:
        chain = []
        current = op
        while current not in hidden:
            parent = nodes[current].get("parent")
            if parent is None or parent not in op_set or parent in chain or parent == current:
                hidden[current] = False
                break
            chain.append(current)
            current = parent
        for node in reversed(chain):
            parent = nodes[node]["parent"]
            hidden[node] = hidden[parent] or collapses(parent)

    expanded = {nodes[op].get("parent") for op in op_keys if not hidden[op]} & op_set
    shown = {op for op in op_keys if not hidden[op] and op not in expanded}
    # A value that only an expanded call produced (its return value was not
    # the output of any operation inside it) keeps that call as a line.
    for op in expanded:
        for value in succ[op]:
            if not any(p in shown for p in pred[value]):
                shown.add(op)
                break
    return shown


def _sort_key(node: Any) -> tuple:
    # Values first (they only unlock operations), then operations by client
    # and id: op ids are handed out in execution order, so among the
    # operations that are ready the earliest one comes first.
    if isinstance(node, tuple) and len(node) == 3 and isinstance(node[1], int) and isinstance(node[2], int):
        return (0 if node[0] == "v" else 1, node[1], node[2], "")
    return (2, 0, 0, repr(node))


def execution_order(graph: nx.DiGraph, shown: set) -> list:
    """The shown operations in execution order (Kahn's algorithm, linear but for a heap of ready ops).

    Values are released as soon as they are ready (they only unlock
    operations); among ready operations the one with the smallest id comes
    first, and op ids are handed out in execution order.
    """
    nodes, succ = graph._node, graph._succ
    remaining = {node: len(parents) for node, parents in graph._pred.items()}
    ready_values = []
    ready_ops: list[tuple[tuple, Any]] = []
    for node, degree in remaining.items():
        if degree == 0:
            if nodes[node].get("kind") == "value":
                ready_values.append(node)
            else:
                ready_ops.append((_sort_key(node), node))
    heapq.heapify(ready_ops)
    order = []
    processed = 0
    push, pop = heapq.heappush, heapq.heappop
    while ready_values or ready_ops:
        if ready_values:
            node = ready_values.pop()
        else:
            node = pop(ready_ops)[1]
            if node in shown:
                order.append(node)
        processed += 1
        for child in succ[node]:
            left = remaining[child] - 1
            remaining[child] = left
            if left == 0:
                if nodes[child].get("kind") == "value":
                    ready_values.append(child)
                else:
                    push(ready_ops, (_sort_key(child), child))
    if processed < len(remaining):
        # A cycle cannot come from real provenance; fall back to event order.
        return sorted(shown, key=_sort_key)
    return order
