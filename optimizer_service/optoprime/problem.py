"""From a feedback subgraph (internals §5) to the parts of an OptoPrime problem instance.

`analyse(problem)` walks the graph once and returns a `ProblemGraph`: the
variables (trainable parameters), the operations in execution order with
their #Code line and #Documentation entry, and every value the lines
mention with its name, type and rendered text, classified as OptoPrime does
into #Inputs (roots), #Others (intermediate) and #Outputs (what feedback
was given on). Rendering to text under a token budget is `instance.py`'s job;
this module decides names and structure only.

Which operations become lines, and their order, is `selection.py`'s job.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import networkx as nx

from optimizer_service.graph import gc_paused
from optimizer_service.optoprime import operations
from optimizer_service.optoprime.selection import (code_variable_of, code_variables, execution_order,
                                                   shown_operations)
from optimizer_service.optoprime.naming import NameTable, identifier, output_base, short_name
from optimizer_service.optoprime.prompts import REJECTIONS_HEADER
from optimizer_service.step_types import ParamState, StepInput
from protocol.values import render

INPUT, OTHER, OUTPUT = "input", "other", "output"
_NO_FUNCTION: dict[str, Any] = {}     # a call whose FunctionDef is missing altogether (never mutated)


@dataclass
class VariableEntry:
    param: str               # the parameter's name in the session
    name: str                # its identifier in the prompt
    type_label: str          # "code" for function source
    text: str                # repr of the value, or the source
    constraint: str | None


class ValueEntry:
    """One value the #Code lines mention: its name, type and text, and its section.

    The text is rendered from the value's summary when first read: a long
    trace names every value, but a summarised prompt shows only a few.
    """

    __slots__ = ("name", "role", "_type_label", "_text", "_summary")

    def __init__(self, name: str, type_label: str | None = None, text: str | None = None, role: str = INPUT, *,
                 summary: Any = None) -> None:
        self.name = name
        self.role = role                     # INPUT, OTHER or OUTPUT
        self._type_label = type_label
        self._text = text
        self._summary = summary

    @property
    def type_label(self) -> str:
        if self._type_label is None:
            self._type_label = summary_type_label(self._summary)
        return self._type_label

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = render_summary(self._summary)[1]
        return self._text

    def __repr__(self) -> str:
        return f"ValueEntry({self.name!r}, {self.type_label!r}, {self.text!r}, {self.role!r})"


@dataclass(slots=True)      # one per operation of a trace: slots make them cheaper to create
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


def summary_type_label(summary: Any) -> str:
    """The type label of a value summary: its type's name without the module."""
    if not isinstance(summary, dict):
        return "unknown"
    return str(summary.get("t") or "object").rsplit(".", 1)[-1]


def render_summary(summary: Any) -> tuple[str, str]:
    """(type label, value text) of a value summary, through protocol.values.render."""
    if not isinstance(summary, dict):
        return "unknown", "<value not recorded>"
    return summary_type_label(summary), render(summary)


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
    """Names, #Code lines, documentation and classified values of `problem` (one pass over its graph).

    Linear in the size of the graph: what depends only on a function or an
    op-mode site (its name, signature, documentation, code variable, source
    shape) is worked out once per function or site, not once per call, and
    value texts are rendered only when a prompt shows them. The cyclic GC is
    paused meanwhile, as for the graph build: the analysis allocates a few
    small acyclic objects per operation, and every collection would rescan
    the whole graph.
    """
    with gc_paused():
        return _Analysis(problem).run()


@dataclass(frozen=True)
class _CallInfo:
    """What every call of one function shares."""

    function_name: str                 # as shown in #Code
    base: str                          # what its results are named after
    output_name: str                   # f"{base}_output"
    signature_names: frozenset[str] | None
    code_var: str | None               # the code variable it runs, if its source is trainable
    doc_key: str
    doc: str


@dataclass(frozen=True)
class _SiteInfo:
    """What every execution of one op-mode site shares."""

    shape: operations.SiteShape
    text: str                          # the site's source segment, stripped
    output_name: str
    doc_key: str
    doc: str


class _Analysis:
    """The state of one `analyse` call: the name table, the values named so far, per-function facts."""

    def __init__(self, problem: StepInput) -> None:
        self.problem = problem
        self.graph: nx.DiGraph = problem.graph
        # networkx's own dicts, read directly: a view object per access costs
        # more than the work done per operation.
        self.nodes, self.pred, self.succ = self.graph._node, self.graph._pred, self.graph._succ
        self.table = NameTable()
        self.var_names = variable_names(problem.params, self.table)
        self.code_lookup = code_variables(problem.params, self.var_names)
        self.feedback_keys = [f.node for f in problem.feedback]
        self.feedback_set = set(self.feedback_keys)
        self.values: dict[Any, ValueEntry] = {}
        self.docs_seen: set[str] = set()
        # Keyed by the FunctionDef dict's identity (the graph builder shares
        # one dict between all calls of a function; the graph keeps it alive
        # for the whole analysis) and by (site id, text, opname).
        self._calls: dict[int, tuple[dict, _CallInfo]] = {}
        self._sites: dict[tuple, _SiteInfo] = {}

    def run(self) -> ProblemGraph:
        variables = []
        for pname, state in self.problem.params.items():
            type_label, text = render_param_value(state)
            variables.append(VariableEntry(pname, self.var_names[pname], type_label, text, state.constraint))
        op_keys = [n for n, a in self.nodes.items() if a.get("kind") in ("call", "op")]
        shown = shown_operations(self.graph, op_keys, self.code_lookup)
        ops = [self._operation(op) for op in execution_order(self.graph, shown)]
        outputs = self._outputs()
        result = ProblemGraph(variables, ops, self.values, outputs, _feedback_text(self.problem, self.values),
                              names_to_params={v: k for k, v in self.var_names.items()})
        result.distance = _anchor_distances(ops)
        return result

    # -- facts shared by every call of a function / every run of a site -------
    def _call_info(self, func: dict | None) -> _CallInfo:
        func = func or _NO_FUNCTION
        cached = self._calls.get(id(func))
        if cached is not None:
            return cached[1]
        function_name = identifier(short_name(func.get("qualname") or f"function_{func.get('id', '')}"), "call")
        base = output_base(function_name)
        info = _CallInfo(
            function_name=function_name, base=base, output_name=f"{base}_output",
            signature_names=_signature_names(func.get("signature")),
            code_var=code_variable_of(func, self.code_lookup),
            doc_key=f"call:{func.get('module')}:{func.get('qualname') or function_name}",
            doc=f"[{function_name}] {_function_doc(func)}",
        )
        self._calls[id(func)] = (func, info)
        return info

    def _site_info(self, site: dict | None) -> _SiteInfo:
        site = site or {}
        raw_text = str(site.get("text") or "")
        opname = str(site.get("opname") or site.get("op") or "")
        key = (site.get("id"), raw_text, opname)
        info = self._sites.get(key)
        if info is None:
            shape = operations.site_shape(raw_text, opname)
            text = raw_text.strip()
            base = shape.base
            info = self._sites[key] = _SiteInfo(
                shape=shape, text=text, output_name=f"{base}_output", doc_key=f"op:{base}",
                doc=f"[{base}] the Python operation `{text}`" if text else f"[{base}] a Python operation")
        return info

    # -- one operation -------------------------------------------------------
    def _operation(self, op: Any) -> OpEntry:
        attrs = self.nodes[op]
        nodes, values, var_names = self.nodes, self.values, self.var_names
        is_call = attrs.get("kind") != "op"
        if is_call:
            in_edges = self.pred[op].items()
            call = self._call_info(attrs.get("func"))
            base, output_name, doc_key, doc = call.base, call.output_name, call.doc_key, call.doc
            signature_names = call.signature_names
            site = matched = None
        else:
            in_edges = sorted(self.pred[op].items(), key=_position_of)
            site = self._site_info(attrs.get("site"))
            base, output_name, doc_key, doc = site.shape.base, site.output_name, site.doc_key, site.doc
            matched = operations.operands_for(site.shape, len(in_edges))

        anchor = False
        arguments: list[tuple[Any, str]] = []     # (edge arg, value name)
        reads: list[str] = []
        input_keys: list[Any] = []
        for position, (value_key, edge) in enumerate(in_edges):
            param = nodes[value_key].get("param")
            arg = edge.get("arg")
            if param in var_names:
                name = var_names[param]
                anchor = True
            else:
                entry = values.get(value_key)
                if entry is None:
                    entry = self._name_input(value_key, self._input_candidates(is_call, arg, position, base, matched))
                name = entry.name
                input_keys.append(value_key)
            if is_call and param and arg == param and \
                    (arg not in signature_names if signature_names is not None else not str(arg).isidentifier()):
                reads.append(name)      # a parameter read inside the body, not an argument
            else:
                arguments.append((arg, name))

        outputs = [v for v in self.succ[op] if nodes[v].get("kind") == "value"]
        out_names = []
        for value_key in outputs:
            entry = values.get(value_key)
            if entry is None:
                entry = values[value_key] = ValueEntry(self.table.allocate(output_name), role=OTHER,
                                                       summary=nodes[value_key].get("summary"))
            out_names.append(entry.name)
            anchor = anchor or value_key in self.feedback_set

        if is_call:
            anchor = anchor or call.code_var is not None
            expression = _call_expression(call.function_name, arguments, call.code_var, reads)
        else:
            names = [name for _, name in arguments]
            expression = operations.substitute(site.shape.text or site.text, matched, names) if matched else \
                f"{base}({', '.join(names)})" + (f"  # {site.text}" if site.text else "")

        error = attrs.get("error")
        if error:
            anchor = True
            error_key = ("error", op)
            values[error_key] = _error_value(self.table.allocate(f"{base}_error"), error)
            outputs.append(error_key)
            out_names.append(values[error_key].name)

        if doc_key in self.docs_seen:
            doc = ""
        else:
            self.docs_seen.add(doc_key)
        line = f"{', '.join(out_names)} = {expression}" if out_names else expression
        return OpEntry(line, doc_key, doc, input_keys, outputs, anchor)

    @staticmethod
    def _input_candidates(is_call: bool, arg: Any, position: int, base: str,
                          matched: tuple[operations.Operand, ...] | None) -> list[str]:
        """Names for an input nothing shown produced: its argument name, or its operand's own name/role."""
        if is_call:
            return [str(arg) if isinstance(arg, str) else f"{base}_arg{position}"]
        operand = matched[position] if matched else None
        own = [operand.identifier] if operand and operand.identifier else []
        return own + [f"{base}_{operand.role if operand else f'arg{position}'}"]

    def _name_input(self, key: Any, candidates: list[str]) -> ValueEntry:
        attrs = self.nodes.get(key) or {}
        param = attrs.get("param")
        if param and param not in self.problem.params:
            candidates = [short_name(param), *candidates]   # a non-trainable parameter: its own name
        entry = self.values[key] = ValueEntry(self.table.allocate_first_free(candidates), role=INPUT,
                                              summary=attrs.get("summary"))
        return entry

    def _outputs(self) -> list[Any]:
        """Values with feedback, in feedback order (named now if no shown operation produced them)."""
        ordered = []
        for key in self.feedback_keys:
            if key not in self.values and key in self.nodes and self.nodes[key].get("kind") == "value":
                if self.nodes[key].get("param") in self.var_names:
                    continue
                # Feedback on a root, or on a value made inside a trainable call.
                self._name_input(key, ["output"])
            if key in self.values:
                self.values[key].role = OUTPUT
                if key not in ordered:
                    ordered.append(key)
        return ordered


def _position_of(in_edge: tuple[Any, dict]) -> int:
    arg = in_edge[1].get("arg")
    return arg if isinstance(arg, int) else 0


def _call_expression(function_name: str, arguments: list[tuple[Any, str]], code_var: str | None,
                     reads: list[str]) -> str:
    parts = [f"{arg if arg.isidentifier() else identifier(arg)}={name}" if isinstance(arg, str) else name
             for arg, name in arguments]
    if code_var:
        parts.append(f"__code={code_var}")     # opto's spelling for the code a trainable operator runs
    expression = f"{function_name}({', '.join(parts)})"
    return expression + (f"  # reads {', '.join(reads)}" if reads else "")


def _error_value(name: str, error: dict) -> ValueEntry:
    message = f"{error.get('type', 'Exception')}: {error.get('message', '')}"
    if error.get("traceback"):
        message += "\n" + str(error["traceback"]).rstrip()
    return ValueEntry(name, str(error.get("type") or "Exception"), message, OUTPUT)


def _signature_names(signature: Any) -> frozenset[str] | None:
    """Parameter names of a FunctionDef signature like "(self, x, *args, k=1) -> str" (None: unreadable)."""
    if not isinstance(signature, str) or not signature.strip().startswith("("):
        return None
    return _parse_signature_names(signature)


@lru_cache(maxsize=4096)
def _parse_signature_names(signature: str) -> frozenset[str] | None:
    # Cached across steps: a session's functions keep their signatures.
    text = signature.strip()
    if "->" in text:
        text = text[: text.rindex("->")].strip()
    try:
        args = ast.parse(f"def _f{text}: pass").body[0].args  # type: ignore[attr-defined]
    except (SyntaxError, ValueError):
        return None
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    return frozenset(names)


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
    for index, op in enumerate(ops):
        for key in op.outputs:
            producers.setdefault(key, []).append(index)
    # Two ops are neighbours when one produced a value the other used.
    neighbours: list[list[int]] = [[] for _ in ops]
    for index, op in enumerate(ops):
        for key in op.inputs:
            for producer in producers.get(key, ()):
                neighbours[index].append(producer)
                neighbours[producer].append(index)
    unreached = len(ops) + 1
    distance = [unreached] * len(ops)
    queue: deque[int] = deque()
    for index, op in enumerate(ops):
        if op.anchor:
            distance[index] = 0
            queue.append(index)
    while queue:
        index = queue.popleft()
        further = distance[index] + 1
        for other in neighbours[index]:
            if distance[other] > further:
                distance[other] = further
                queue.append(other)
    return distance
