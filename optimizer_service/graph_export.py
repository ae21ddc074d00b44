"""Execution graphs as DOT, GraphML or JSON text (`trace-daemon graph`).

JSON is networkx's node_link format with the node attributes unchanged
(tuple keys become lists). GraphML allows only scalar attributes, so nodes
get string ids ("v:client:node", "op:client:op") and nested attributes are
flattened to text. DOT is written here directly: it needs no graphviz
bindings, and labels show what a user wants to see (values, function names,
parameters, errors).
"""
from __future__ import annotations

import base64
import io
import json
from typing import Any, Final

import networkx as nx

FORMATS: Final = ("dot", "graphml", "json")


class UnknownFormat(ValueError):
    """The requested export format is not one of FORMATS."""


def export_graph(graph: nx.DiGraph, fmt: str) -> str:
    """Return `graph` as text in format `fmt` ("dot", "graphml" or "json")."""
    if fmt == "json":
        return to_json(graph)
    if fmt == "graphml":
        return to_graphml(graph)
    if fmt == "dot":
        return to_dot(graph)
    raise UnknownFormat(f"unknown graph format {fmt!r}; choose one of {', '.join(FORMATS)}")


def node_id(key: tuple) -> str:
    """The text id of a graph node key: ("v", 3, 17) -> "v:3:17"."""
    return ":".join(str(part) for part in key)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def to_json(graph: nx.DiGraph) -> str:
    data = nx.node_link_data(graph, edges="edges")
    return json.dumps(data, default=_json_default, sort_keys=True)


def node_label(key: tuple, attrs: dict[str, Any]) -> str:
    """A one-line human label: the value for value nodes, the function or operation for ops."""
    if attrs.get("kind") == "value":
        text = _render(attrs.get("summary"))
        if attrs.get("param"):
            return f"{attrs['param']} = {text}"
        return text
    if attrs.get("kind") == "op":
        site = attrs.get("site") or {}
        return site.get("text") or site.get("opname") or node_id(key)
    func = attrs.get("func") or {}
    name = func.get("qualname") or f"function {func.get('id', '?')}"
    return f"{name}()"


def _render(summary: Any) -> str:
    if summary is None:
        return "?"
    try:
        from protocol.values import render
        text = render(summary)
    except Exception:  # a summary this version cannot render must not break an export
        text = repr(summary.get("v", summary.get("r", summary)))
    return text if len(text) <= 80 else text[:77] + "..."


def to_graphml(graph: nx.DiGraph) -> str:
    flat = nx.DiGraph()
    for key, attrs in graph.nodes(data=True):
        row: dict[str, Any] = {"label": node_label(key, attrs), "kind": attrs.get("kind", "")}
        for name, value in attrs.items():
            if name in ("kind",) or value is None:
                continue
            if isinstance(value, tuple):
                row[name] = node_id(value)
            elif isinstance(value, (str, int, float, bool)):
                row[name] = value
            else:
                row[name] = json.dumps(value, default=_json_default, sort_keys=True)
        flat.add_node(node_id(key), **row)
    for u, v, attrs in graph.edges(data=True):
        flat.add_edge(node_id(u), node_id(v), **{k: str(val) for k, val in attrs.items() if val is not None})
    out = io.BytesIO()
    nx.write_graphml(flat, out, encoding="utf-8")
    return out.getvalue().decode("utf-8")


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: nx.DiGraph) -> str:
    lines = ["digraph trace {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for key, attrs in graph.nodes(data=True):
        style = []
        if attrs.get("kind") == "value":
            style.append("shape=ellipse")
            if attrs.get("param"):
                style.append('style=filled, fillcolor="#ffe9a8"')
        else:
            style.append("shape=box")
            if attrs.get("error"):
                style.append('color=red, fontcolor=red')
        label = node_label(key, attrs)
        if attrs.get("error"):
            label += f"\n{attrs['error'].get('type', 'Exception')}: {attrs['error'].get('message', '')}"
        lines.append(f"  {_dot_quote(node_id(key))} [label={_dot_quote(label)}, {', '.join(style)}];")
    for u, v, attrs in graph.edges(data=True):
        extra = f" [label={_dot_quote(str(attrs['arg']))}]" if attrs.get("arg") is not None else ""
        lines.append(f"  {_dot_quote(node_id(u))} -> {_dot_quote(node_id(v))}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"
