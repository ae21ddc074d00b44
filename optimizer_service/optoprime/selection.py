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
import textwrap
from typing import Any

import networkx as nx

from optimizer_service.step_types import ParamState


def code_variables(params: dict[str, ParamState], var_names: dict[str, str]) -> dict[str, str]:
    """Lookup keys -> code variable name, to find which call runs which trainable source.

    A source parameter's name is not always its function's "module:qualname"
    (a script's module is "__main__" in the process but may be named after
    its file in the session), so every dotted suffix of the name is a key
    ("agent.Agent.greet" -> "Agent.greet", "greet") unless two parameters
    share it, and so is the normalised source text.
    """
    lookup: dict[str, str] = {}
    ambiguous: set[str] = set()
    for pname, state in params.items():
        if not (state.kind == "source" or state.type == "code"):
            continue
        name = var_names[pname]
        keys = {pname}
        tail = pname.rsplit(":", 1)[-1]
        parts = tail.split(".")
        keys.update(".".join(parts[i:]) for i in range(len(parts)))
        if isinstance(state.value, str):
            keys.add("source:" + _normalised_source(state.value))
        for key in keys:
            if key in lookup and lookup[key] != name:
                ambiguous.add(key)
            lookup.setdefault(key, name)
    for key in ambiguous:
        del lookup[key]
    return lookup


def _normalised_source(source: str) -> str:
    """Source without indentation and decorators: what a function's FunctionDef and its parameter share."""
    lines = textwrap.dedent(source).strip().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("def ", "async def ")):
            return "\n".join(lines[index:]).strip()
    return "\n".join(lines)


def code_variable_of(attrs: dict, func: dict, lookup: dict[str, str]) -> str | None:
    if not lookup or not func:
        return None
    qualname = str(func.get("qualname") or "")
    for candidate in (attrs.get("code_param"), f"{func.get('module')}:{qualname}", qualname,
                      "source:" + _normalised_source(str(func.get("source") or ""))):
        if candidate and candidate in lookup:
            return lookup[candidate]
    return None


def shown_operations(graph: nx.DiGraph, op_keys: list, op_set: set, code_lookup: dict[str, str]) -> set:
    nodes = graph.nodes

    def collapses(op: Any) -> bool:
        attrs = nodes[op]
        return attrs.get("kind") == "call" and code_variable_of(attrs, attrs.get("func") or {}, code_lookup) \
            is not None

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
        for value in graph.succ[op]:
            if not any(p in shown for p in graph.pred[value]):
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
    nodes = graph.nodes
    succ = graph.succ
    remaining = dict(graph.in_degree())
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
    while ready_values or ready_ops:
        if ready_values:
            node = ready_values.pop()
        else:
            node = heapq.heappop(ready_ops)[1]
            if node in shown:
                order.append(node)
        processed += 1
        for child in succ[node]:
            remaining[child] -= 1
            if remaining[child] == 0:
                if nodes[child].get("kind") == "value":
                    ready_values.append(child)
                else:
                    heapq.heappush(ready_ops, (_sort_key(child), child))
    if processed < len(remaining):
        # A cycle cannot come from real provenance; fall back to event order.
        return sorted(shown, key=_sort_key)
    return order
