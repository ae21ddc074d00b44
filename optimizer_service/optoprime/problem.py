"""From a feedback subgraph (internals §5) to the parts of an OptoPrime problem instance.

`analyse(problem)` walks the graph once and returns a `ProblemGraph`: the
variables (trainable parameters), the operations in execution order with
their #Code line and #Documentation entry, and every value the lines
mention with its name, type and rendered text, classified as OptoPrime does
into #Inputs (roots), #Others (intermediate) and #Outputs (what feedback
was given on). Rendering to text under a token budget is `instance.py`'s job;
this module decides names and structure only.

Which operations are lines of #Code:

- an operation with traced operations inside it (a marked call in op mode,
  or a marked call that called other marked functions) is shown through
  them, like opto shows the operators inside a function it did not bundle;
- a call of a trainable function is one line whatever it did inside (its
  body is the variable the LLM edits), with `__code=<variable>` as opto
  writes it;
- an operation whose output nothing shown produces is kept, so that every
  value mentioned has a producer or is an input.
"""
from __future__ import annotations

import heapq
import inspect
import textwrap
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from optimizer_service.optoprime import operations
from optimizer_service.optoprime.naming import NameTable, identifier, output_base, short_name
from optimizer_service.optoprime.prompts import REJECTIONS_HEADER
from optimizer_service.step_types import ParamState, StepInput

INPUT, OTHER, OUTPUT = "input", "other", "output"


@dataclass
class VariableEntry:
    param: str               # the parameter's name in the session
    name: str                # its identifier in the prompt
    type_label: str          # "code" for function source
    text: str                # repr of the value, or the source
    constraint: str | None


@dataclass
class ValueEntry:
    name: str
    type_label: str
    text: str
    role: str                # INPUT, OTHER or OUTPUT


@dataclass
class OpEntry:
    line: str
    doc_key: str
    doc: str
    inputs: list[Any]        # value keys (variables excluded)
    outputs: list[Any]
    anchor: bool             # reads a variable, is a trainable call, produces an output or raised


@dataclass
class ProblemGraph:
    variables: list[VariableEntry]
    ops: list[OpEntry]
    values: dict[Any, ValueEntry]
    outputs: list[Any]                       # value keys with feedback, in feedback order
    feedback: str
    distance: list[int] = field(default_factory=list)   # per op: hops to the nearest anchor
    names_to_params: dict[str, str] = field(default_factory=dict)


def render_summary(summary: Any) -> tuple[str, str]:
    """(type label, value text) of a value summary, through protocol.values.render."""
    from protocol.values import render  # lazily: the protocol package is the wire format's owner

    if not isinstance(summary, dict):
        return "unknown", "<value not recorded>"
    type_name = str(summary.get("t") or "object")
    return type_name.rsplit(".", 1)[-1], render(summary)


def render_param_value(state: ParamState) -> tuple[str, str]:
    """(type label, text) of a parameter's current value: code as source, data as a Python literal."""
    if state.kind == "source" or state.type == "code":
        # Methods arrive indented as they are in the file; show them as a
        # definition (the source rule dedents suggestions the same way).
        return "code", textwrap.dedent(str(state.value)).strip("\n")
    return state.type or type(state.value).__name__, repr(state.value)


def variable_names(params: dict[str, ParamState], table: NameTable) -> dict[str, str]:
    """Prompt identifier per parameter name: the short name, else the full one, else numbered."""
    names: dict[str, str] = {}
    for pname, state in params.items():
        short, full = short_name(pname), pname
        if state.kind == "source" or state.type == "code":
            short, full = f"{short}_code", f"{full}_code"
        names[pname] = table.allocate_first_free([identifier(short), identifier(full)])
    return names


def analyse(problem: StepInput) -> ProblemGraph:
    graph: nx.DiGraph = problem.graph
    table = NameTable()
    var_names = variable_names(problem.params, table)
    variables = []
    for pname, state in problem.params.items():
        type_label, text = render_param_value(state)
        variables.append(VariableEntry(pname, var_names[pname], type_label, text, state.constraint))
    code_var_for_func = _code_variables(problem.params, var_names)

    nodes = graph.nodes
    op_keys = [n for n, a in nodes(data=True) if a.get("kind") in ("call", "op")]
    op_set = set(op_keys)
    shown = _shown_operations(graph, op_keys, op_set, code_var_for_func)
    order = _execution_order(graph, shown)

    feedback_keys = [f.node for f in problem.feedback]
    feedback_set = set(feedback_keys)
    values: dict[Any, ValueEntry] = {}
    ops: list[OpEntry] = []
    docs_seen: set[str] = set()

    def name_root(key: Any, candidates: list[str]) -> None:
        param = nodes[key].get("param") if key in graph else None
        if param and param not in problem.params:
            candidates = [short_name(param), *candidates]   # a non-trainable parameter: its own name
        type_label, text = render_summary(nodes[key].get("summary"))
        values[key] = ValueEntry(table.allocate_first_free(candidates), type_label, text, INPUT)

    for op in order:
        attrs = nodes[op]
        in_edges = list(graph.pred[op].items())
        if attrs.get("kind") == "op":
            in_edges.sort(key=lambda item: item[1].get("arg") if isinstance(item[1].get("arg"), int) else 0)
        outputs = [v for v in graph.succ[op] if nodes[v].get("kind") == "value"]
        anchor = False
        arg_names: list[tuple[Any, str]] = []     # (edge arg, value name)
        reads: list[str] = []
        input_keys: list[Any] = []

        if attrs.get("kind") == "op":
            site = attrs.get("site") or {}
            text = str(site.get("text") or "")
            shape = operations.site_shape(text, str(site.get("opname") or site.get("op") or ""))
            base = shape.base
            matched = operations.operands_for(shape, len(in_edges))
        else:
            func = attrs.get("func") or {}
            function_name = identifier(short_name(func.get("qualname") or f"function_{func.get('id', '')}"), "call")
            base = output_base(function_name)
            signature_names = _signature_names(func.get("signature"))

        for position, (value_key, edge) in enumerate(in_edges):
            value_attrs = nodes[value_key]
            param = value_attrs.get("param")
            arg = edge.get("arg")
            if param in var_names:
                name = var_names[param]
                anchor = True
            else:
                if value_key not in values:
                    if attrs.get("kind") == "op":
                        operand = matched[position] if matched else None
                        own = operand.identifier if operand else None
                        role = operand.role if operand else f"arg{position}"
                        name_root(value_key, ([own] if own else []) + [f"{base}_{role}"])
                    else:
                        name_root(value_key, [str(arg) if isinstance(arg, str) else f"{base}_arg{position}"])
                name = values[value_key].name
                input_keys.append(value_key)
            if attrs.get("kind") == "call" and param and arg == param and \
                    (arg not in signature_names if signature_names is not None else not str(arg).isidentifier()):
                reads.append(name)      # a parameter read inside the body, not an argument
            else:
                arg_names.append((arg, name))

        out_names = []
        for value_key in outputs:
            if value_key not in values:
                type_label, text = render_summary(nodes[value_key].get("summary"))
                values[value_key] = ValueEntry(table.allocate(f"{base}_output"), type_label, text, OTHER)
            out_names.append(values[value_key].name)
            if value_key in feedback_set:
                anchor = True

        if attrs.get("kind") == "op":
            site = attrs.get("site") or {}
            text = str(site.get("text") or "").strip()
            names = [name for _, name in arg_names]
            if matched:
                expression = operations.substitute(text, matched, names)
            else:
                expression = f"{base}({', '.join(names)})" + (f"  # {text}" if text else "")
            doc_key = f"op:{base}"
            doc = f"[{base}] the Python operation `{text}`" if text else f"[{base}] a Python operation"
        else:
            func = attrs.get("func") or {}
            parts = [f"{arg}={name}" if isinstance(arg, str) else name for arg, name in arg_names]
            code_var = _code_variable_of(attrs, func, code_var_for_func)
            if code_var:
                parts.append(f"__code={code_var}")
                anchor = True
            expression = f"{function_name}({', '.join(parts)})"
            if reads:
                expression += f"  # reads {', '.join(reads)}"
            doc_key = f"call:{func.get('module')}:{func.get('qualname') or function_name}"
            doc = f"[{function_name}] {_function_doc(func)}"

        error = attrs.get("error")
        if error:
            anchor = True
            error_key = ("error", op)
            message = f"{error.get('type', 'Exception')}: {error.get('message', '')}"
            if error.get("traceback"):
                message += "\n" + str(error["traceback"]).rstrip()
            values[error_key] = ValueEntry(table.allocate(f"{base}_error"), str(error.get("type") or "Exception"),
                                           message, OUTPUT)
            outputs = outputs + [error_key]
            out_names.append(values[error_key].name)

        line = f"{', '.join(out_names)} = {expression}" if out_names else expression
        if doc_key in docs_seen:
            doc_key, doc = "", ""
        else:
            docs_seen.add(doc_key)
        ops.append(OpEntry(line, doc_key, doc, input_keys, outputs, anchor))

    outputs_in_order = []
    for key in feedback_keys:
        if key not in values and key in graph and nodes[key].get("kind") == "value":
            # Feedback on a value no shown operation produced (a root, or an
            # output of a trainable call's insides): still an output.
            param = nodes[key].get("param")
            if param in var_names:
                continue
            name_root(key, ["output"])
        if key in values:
            values[key].role = OUTPUT
            if key not in outputs_in_order:
                outputs_in_order.append(key)

    feedback = _feedback_text(problem, values)
    result = ProblemGraph(variables, ops, values, outputs_in_order, feedback,
                          names_to_params={v: k for k, v in var_names.items()})
    result.distance = _anchor_distances(ops)
    return result


# -- helpers -------------------------------------------------------------------

def _code_variables(params: dict[str, ParamState], var_names: dict[str, str]) -> dict[str, str]:
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


def _code_variable_of(attrs: dict, func: dict, lookup: dict[str, str]) -> str | None:
    if not lookup or not func:
        return None
    qualname = str(func.get("qualname") or "")
    for candidate in (attrs.get("code_param"), f"{func.get('module')}:{qualname}", qualname,
                      "source:" + _normalised_source(str(func.get("source") or ""))):
        if candidate and candidate in lookup:
            return lookup[candidate]
    return None


def _shown_operations(graph: nx.DiGraph, op_keys: list, op_set: set, code_lookup: dict[str, str]) -> set:
    nodes = graph.nodes

    def collapses(op: Any) -> bool:
        attrs = nodes[op]
        return attrs.get("kind") == "call" and _code_variable_of(attrs, attrs.get("func") or {}, code_lookup) \
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


def _execution_order(graph: nx.DiGraph, shown: set) -> list:
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


def _signature_names(signature: Any) -> set[str] | None:
    if not isinstance(signature, str) or not signature.strip().startswith("("):
        return None
    import ast

    text = signature.strip()
    if "->" in text:
        text = text[: text.rindex("->")].strip()
    try:
        args = ast.parse(f"def _f{text}: pass").body[0].args  # type: ignore[attr-defined]
    except SyntaxError:
        return None
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    return names


def _function_doc(func: dict) -> str:
    doc = func.get("doc")
    if isinstance(doc, str) and doc.strip():
        return inspect.cleandoc(doc)
    source = func.get("source")
    if isinstance(source, str) and source.strip():
        return textwrap.dedent(source).strip("\n")
    return "(no documentation or source recorded)"


def _feedback_text(problem: StepInput, values: dict[Any, ValueEntry]) -> str:
    items = [f for f in problem.feedback if f.text]
    if len(items) == 1:
        text = items[0].text
    else:
        lines = []
        for item in items:
            entry = values.get(item.node)
            lines.append(f"{entry.name}: {item.text}" if entry else item.text)
        text = "\n".join(lines)
    if problem.rejections:
        text = (text + "\n\n" if text else "") + REJECTIONS_HEADER + "\n" + "\n".join(
            f"- {reason}" for reason in problem.rejections)
    return text


def _anchor_distances(ops: list[OpEntry]) -> list[int]:
    """Per op, the fewest data-flow hops (through values, either direction) to an anchor op."""
    producers: dict[Any, list[int]] = {}
    consumers: dict[Any, list[int]] = {}
    for index, op in enumerate(ops):
        for key in op.outputs:
            producers.setdefault(key, []).append(index)
        for key in op.inputs:
            consumers.setdefault(key, []).append(index)
    unreached = len(ops) + 1
    distance = [unreached] * len(ops)
    queue: deque[int] = deque()
    for index, op in enumerate(ops):
        if op.anchor:
            distance[index] = 0
            queue.append(index)
    while queue:
        index = queue.popleft()
        op = ops[index]
        neighbours = [n for key in op.outputs for n in consumers.get(key, ())]
        neighbours += [n for key in op.inputs for n in producers.get(key, ())]
        for other in neighbours:
            if distance[other] > distance[index] + 1:
                distance[other] = distance[index] + 1
                queue.append(other)
    return distance
