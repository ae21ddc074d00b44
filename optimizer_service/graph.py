"""The execution DAG: built from trace events, cut down to what feedback concerns.

Events arrive as raw lists (docs/internals.md §3) and are only appended to
their episode while the program runs; the graph is built here when a step or
an export needs it, so ingest stays cheap. The graph is a
`networkx.DiGraph` with the node and edge attributes of internals §5:

- value node ``("v", client, node)``: ``kind="value"``, ``summary``,
  ``param`` (name or None), ``producer`` (op key or None)
- op node ``("op", client, op)``: ``kind="call"|"op"``, ``func`` or
  ``site`` (dicts), ``parent`` (op key or None), ``error`` (dict or None)
- edges value -> op with ``arg``; op -> value (its output).

Building and the feedback cut are linear in the number of events: one pass
to build, one reverse traversal to cut (opto's backward pass re-walks shared
ancestors and grows super-linearly).
"""
from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from protocol import InvalidMessage, validate_event

# A build reports at most this many bad events verbatim; the rest are counted.
MAX_PROBLEMS_REPORTED = 20


@dataclass
class BuildReport:
    """What went wrong while building a graph (the graph is still usable)."""

    invalid_events: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, problem: str) -> None:
        self.invalid_events += 1
        if len(self.problems) < MAX_PROBLEMS_REPORTED:
            self.problems.append(f"{where}: {problem}")


class GraphBuilder:
    """Accumulates the events of one or more episodes into one DiGraph.

    `functions` maps function id -> FunctionDef dict and `sites` site id ->
    SiteDef dict; an id not (yet) defined becomes ``{"id": id}`` so a graph
    is built even when definitions arrived late or were lost.
    """

    def __init__(self, functions: dict[int, dict[str, Any]] | None = None,
                 sites: dict[int, dict[str, Any]] | None = None) -> None:
        self.graph = nx.DiGraph()
        self.functions = functions or {}
        self.sites = sites or {}
        self.report = BuildReport()
        # Built once per id and shared by every node that refers to it.
        self._undefined_functions: dict[Any, dict[str, Any]] = {}
        self._op_sites: dict[tuple, dict[str, Any]] = {}
        # One key tuple per node, shared by the node and every edge that
        # touches it (client -> id -> key): far fewer tuples in a big graph,
        # and lookups find the key by identity. Set per client by add_events.
        self._value_keys_by_client: dict[int, dict[int, tuple]] = {}
        self._op_keys_by_client: dict[int, dict[int, tuple]] = {}
        self._value_keys: dict[int, tuple] = {}
        self._op_keys: dict[int, tuple] = {}
        self._nodes, self._succ, self._pred = self.graph._node, self.graph._succ, self.graph._pred
        self._handlers = {
            "v": self._value, "param": self._param, "call": self._call, "read": self._read,
            "ret": self._ret, "exc": self._exc, "op": self._op,
        }

    def add_events(self, client: int, episode: int, events: Iterable[list]) -> None:
        """Add one episode's events of process `client` (bad events are counted, not raised)."""
        with gc_paused():
            self._add_events(client, episode, events)

    def _add_events(self, client: int, episode: int, events: Iterable[list]) -> None:
        handlers = self._handlers
        self._value_keys = self._value_keys_by_client.setdefault(client, {})
        self._op_keys = self._op_keys_by_client.setdefault(client, {})
        for index, event in enumerate(events):
            try:
                handler = handlers[event[0]]
            except (KeyError, IndexError, TypeError):
                # Unknown tags may come from a newer minor protocol version: skip them.
                self.report.add(f"client {client} episode {episode} event {index}",
                                f"unknown or missing tag in {_short(event)}")
                continue
            try:
                handler(client, event)
            except (IndexError, TypeError, ValueError, KeyError) as exc:
                self.report.add(f"client {client} episode {episode} event {index}",
                                f"bad {event[0]!r} event {_short(event)} ({_describe(event, exc)})")

    # -- graph primitives -------------------------------------------------
    # networkx's own dicts (node attributes, successors, predecessors) are
    # written directly, as DiGraph.add_node/add_edge do, without their
    # per-call checks: building is the daemon's hottest loop after ingest.
    # For the same reason the handlers index events instead of slicing them
    # (a slice is a new list per event); a short event raises IndexError,
    # which add_events counts like any other bad event.

    def _value_node(self, client: int, node: int) -> tuple:
        """The key of value node `node`, created bare if it has no "v" event (yet)."""
        if type(node) is not int:       # before the lookup: True would find node 1
            raise TypeError(f"expected an int id, got {type(node).__name__}")
        key = self._value_keys.get(node)
        if key is None:
            key = self._value_keys[node] = ("v", client, node)
            if key not in self._nodes:
                # Referenced before (or without) its "v" event: keep the edge, no summary.
                self._nodes[key] = {"kind": "value", "summary": None, "param": None, "producer": None}
                self._succ[key] = {}
                self._pred[key] = {}
        return key

    def _op_node(self, client: int, op: int) -> tuple:
        """The key of op node `op`, created if it is not there yet."""
        if type(op) is not int:
            raise TypeError(f"expected an int id, got {type(op).__name__}")
        key = self._op_keys.get(op)
        if key is None:
            key = self._op_keys[op] = ("op", client, op)
            if key not in self._nodes:
                self._nodes[key] = {"kind": "call", "func": None, "parent": None, "error": None}
                self._succ[key] = {}
                self._pred[key] = {}
        return key

    def _function(self, func: Any) -> dict:
        """The FunctionDef of id `func`; ``{"id": func}`` (one dict per id) when it was never defined."""
        fdef = self.functions.get(func)
        if fdef is None:
            fdef = self._undefined_functions.get(func)
            if fdef is None:
                fdef = self._undefined_functions[func] = {"id": _int(func)}
        return fdef

    def _site(self, site: Any, opname: Any) -> dict:
        """The SiteDef of id `site` with the op's `opname`: one dict per (site, opname), shared by its ops."""
        key = (site, opname)
        sdef = self._op_sites.get(key)
        if sdef is None:
            sdef = self._op_sites[key] = {**(self.sites.get(site) or {"id": _int(site)}), "opname": _str(opname)}
        return sdef

    def _edge(self, u: tuple, v: tuple, data: dict) -> None:
        # One dict shared by both directions, exactly as networkx stores it.
        self._succ[u][v] = data
        self._pred[v][u] = data

    # -- one handler per event tag ----------------------------------------

    def _value(self, client: int, event: list) -> None:
        summary = event[2]
        if type(summary) is not dict:
            raise TypeError(f"summary must be a map, got {type(summary).__name__}")
        self._nodes[self._value_node(client, event[1])]["summary"] = summary

    def _param(self, client: int, event: list) -> None:
        name = event[2]
        self._nodes[self._value_node(client, event[1])]["param"] = _str(name)

    def _call(self, client: int, event: list) -> None:
        parent_op, args = event[3], event[4]
        key = self._op_node(client, event[1])
        attrs = self._nodes[key]
        attrs["kind"] = "call"
        attrs["func"] = self._function(event[2])
        attrs["parent"] = None if parent_op is None else ("op", client, _int(parent_op))
        for argname, node in args:
            self._edge(self._value_node(client, node), key, {"arg": argname})

    def _read(self, client: int, event: list) -> None:
        name = event[2]
        value = self._value_node(client, event[3])
        self._nodes[value]["param"] = _str(name)
        self._edge(value, self._op_node(client, event[1]), {"arg": name})

    def _ret(self, client: int, event: list) -> None:
        op_key = self._op_node(client, event[1])
        value = self._value_node(client, event[2])
        self._edge(op_key, value, {})
        attrs = self._nodes[value]
        if attrs["producer"] is None:
            attrs["producer"] = op_key

    def _exc(self, client: int, event: list) -> None:
        type_name, message, traceback_text = event[2], event[3], event[4]
        self._nodes[self._op_node(client, event[1])]["error"] = {
            "type": _str(type_name), "message": _str(message), "traceback": _str(traceback_text)}

    def _op(self, client: int, event: list) -> None:
        parent_op, site, opname, inputs, out_node = event[2], event[3], event[4], event[5], event[6]
        key = self._op_node(client, event[1])
        attrs = self._nodes[key]
        attrs["kind"] = "op"
        attrs.pop("func", None)
        attrs["site"] = self._site(site, opname)
        attrs["parent"] = None if parent_op is None else ("op", client, _int(parent_op))
        for position, node in enumerate(inputs):
            self._edge(self._value_node(client, node), key, {"arg": position})
        if out_node is not None:
            out = self._value_node(client, out_node)
            self._edge(key, out, {})
            out_attrs = self._nodes[out]
            if out_attrs["producer"] is None:
                out_attrs["producer"] = key


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an int id, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value


def _describe(event: Any, exc: Exception) -> str:
    """The protocol's precise account of a bad event (``call.args: expected ...``)."""
    try:
        validate_event(event)
    except InvalidMessage as problem:
        return str(problem)
    return f"{type(exc).__name__}: {exc}"


def _short(event: Any) -> str:
    text = repr(event)
    return text if len(text) <= 120 else text[:117] + "..."


def feedback_subgraph(graph: nx.DiGraph, targets: Iterable[tuple], *, in_place: bool = False) -> nx.DiGraph:
    """The targets, all their ancestors, and the marked calls made inside included calls.

    A call traced at `call` granularity is one operator: its result depends
    on everything that ran inside it, including marked calls whose values
    never surface as edges (a method that returns what a nested trainable
    method built). So the marked calls made inside an included call, with
    their outputs and ancestors, are included too: that is how a trainable
    function called from a marked function reaches the optimizer. A call
    whose inside was traced operation by operation (`op` granularity) has
    exact value edges already and pulls in nothing more.

    One traversal shared by all targets: every node and edge is visited at
    most once, so the cost is linear in the size of the graph. Targets
    missing from `graph` are ignored. With ``in_place=True`` the other nodes
    are removed from `graph` itself and it is returned: no copy, the cost is
    only that of the nodes removed (a step builds its graph for this cut
    alone, so it uses this).
    """
    with gc_paused():
        seen = _ancestors_of(graph, targets)
        if in_place:
            if len(seen) != graph.number_of_nodes():
                graph.remove_nodes_from([n for n in graph if n not in seen])
            return graph
        return _copy_of(graph, seen)


def _ancestors_of(graph: nx.DiGraph, targets: Iterable[tuple]) -> set:
    # graph._pred / _succ / _node are networkx's own dicts: reading them
    # directly avoids building a view object per node (3x faster on long chains).
    pred, succ, attrs = graph._pred, graph._succ, graph._node
    nested: dict | None = None  # built on the first included call
    seen: set = set()
    stack = []
    for target in targets:
        if target in pred and target not in seen:
            seen.add(target)
            stack.append(target)
    while stack:
        node = stack.pop()
        for parent in pred[node]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
        if attrs[node].get("kind") != "call":
            continue
        if nested is None:
            nested = _nested_calls(graph)
        for child in nested.get(node, ()):
            for member in (child, *succ[child]):  # the nested call and its outputs
                if member not in seen:
                    seen.add(member)
                    stack.append(member)
    return seen


def _nested_calls(graph: nx.DiGraph) -> dict:
    """call key -> the marked calls made directly inside it, for calls with no traced operations inside."""
    calls: dict = {}
    has_ops: set = set()
    for key, node in graph._node.items():
        parent = node.get("parent")
        if parent is None:
            continue
        kind = node.get("kind")
        if kind == "call":
            calls.setdefault(parent, []).append(key)
        elif kind == "op":
            has_ops.add(parent)
    for parent in has_ops:
        calls.pop(parent, None)
    return calls


def _copy_of(graph: nx.DiGraph, seen: set) -> nx.DiGraph:
    pred = graph._pred
    sub = nx.DiGraph()
    nodes = graph.nodes
    sub.add_nodes_from((n, nodes[n]) for n in seen)
    sub.add_edges_from((u, v, d) for v in seen for u, d in pred[v].items())
    return sub


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building or walking big graphs.

    Graph nodes are many small dicts and tuples and make no garbage cycles;
    with the collector running, every few thousand allocations it rescans
    them all, which doubles build time on a 100k-node graph. (The optimizer
    pauses it the same way while it turns a graph into a prompt.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def trainable_in(graph: nx.DiGraph) -> tuple[set[str], set[int]]:
    """Names of parameters whose values appear in `graph`, and ids of the called functions.

    The daemon maps function ids to source parameters (trainable functions).
    """
    params: set[str] = set()
    funcs: set[int] = set()
    for _, attrs in graph.nodes(data=True):
        if attrs.get("kind") == "value":
            if attrs.get("param"):
                params.add(attrs["param"])
        elif attrs.get("kind") == "call" and attrs.get("func"):
            funcs.add(attrs["func"]["id"])
    return params, funcs
