"""Building feedback graphs in the docs/internals.md §5 format for optimizer tests.

    g = TraceGraph()
    x = g.param_value("x", -1.0)
    out = g.call("bar", {"x": x}, returns=2.0, doc="...")
    g.step_input(feedback={out: "The number needs to be larger."}, params=[ParamState("x", "float", -1.0)])
"""
from __future__ import annotations

from typing import Any

import networkx as nx

from optimizer_service.step_types import FeedbackItem, MemoryEntry, ParamState, StepInput
from protocol.values import summarize

CLIENT = 1


class TraceGraph:
    def __init__(self) -> None:
        self.graph = nx.DiGraph()
        self._next_node = 100
        self._next_op = 1

    @staticmethod
    def function_id(qualname: str, module: str = "app") -> int:
        """The FunctionDef id `call` gives function `module:qualname` (what a source ParamState's func_id names)."""
        return hash((module, qualname)) & 0xFFFF

    def _new_node(self) -> tuple:
        self._next_node += 1
        return ("v", CLIENT, self._next_node)

    def _new_op(self) -> tuple:
        self._next_op += 1
        return ("op", CLIENT, self._next_op)

    def value(self, obj: Any, *, param: str | None = None, summary: dict | None = None) -> tuple:
        """A value node with no producer (a root); `summary` replaces protocol.values.summarize(obj)."""
        key = self._new_node()
        self.graph.add_node(key, kind="value", summary=summary or summarize(obj), param=param, producer=None)
        return key

    def param_value(self, name: str, obj: Any) -> tuple:
        return self.value(obj, param=name)

    def call(self, qualname: str, args: dict[str, tuple], *, returns: Any = None, doc: str | None = None,
             source: str = "", module: str = "app", trainable: bool = False, parent: tuple | None = None,
             signature: str | None = None, error: dict | None = None, output: tuple | None = None,
             op: tuple | None = None) -> tuple | None:
        """A marked call; returns its output value node (or `output` when given, None for an exception)."""
        op = op or self._new_op()
        func = {"id": self.function_id(qualname, module), "module": module, "qualname": qualname, "source": source,
                "doc": doc, "signature": signature or "(" + ", ".join(args) + ")", "file": f"{module}.py",
                "line": 1, "trainable": trainable, "freevars": []}
        self.graph.add_node(op, kind="call", func=func, parent=parent, error=error)
        for name, node in args.items():
            self.graph.add_edge(node, op, arg=name)
        if error is not None:
            return None
        out = output or self.value(returns)
        self.graph.add_edge(op, out)
        if self.graph.nodes[out]["producer"] is None:
            self.graph.nodes[out]["producer"] = op
        return out

    def begin_call(self, qualname: str, args: dict[str, tuple], **kw: Any) -> tuple:
        """An op node for a call whose insides are traced too (op mode): returns the op key."""
        op = self._new_op()
        func = {"id": 0, "module": "app", "qualname": qualname, "source": kw.get("source", ""),
                "doc": kw.get("doc"), "signature": "(" + ", ".join(args) + ")", "file": "app.py", "line": 1,
                "trainable": False, "freevars": []}
        self.graph.add_node(op, kind="call", func=func, parent=kw.get("parent"), error=None)
        for name, node in args.items():
            self.graph.add_edge(node, op, arg=name)
        return op

    def end_call(self, op: tuple, output: tuple) -> None:
        self.graph.add_edge(op, output)

    def op(self, opname: str, text: str, inputs: list[tuple], result: Any, *, parent: tuple | None = None) -> tuple:
        """An op-mode operation at a site with source `text`."""
        key = self._new_op()
        site = {"id": key[2], "func": 0, "op": opname, "line": 1, "col": 0, "text": text, "opname": opname}
        self.graph.add_node(key, kind="op", site=site, parent=parent, error=None)
        for position, node in enumerate(inputs):
            self.graph.add_edge(node, key, arg=position)
        out = self.value(result)
        self.graph.add_edge(key, out)
        self.graph.nodes[out]["producer"] = key
        return out

    def step_input(self, *, feedback: dict[tuple, str], params: list[ParamState], memory: list[MemoryEntry] = (),
                   rejections: list[str] = (), options: dict | None = None, session: str = "test") -> StepInput:
        return StepInput(session=session, step_index=0, graph=self.graph,
                         feedback=[FeedbackItem(node=k, text=t, client=CLIENT, episode=1) for k, t in feedback.items()],
                         params={p.name: p for p in params}, memory=list(memory), rejections=list(rejections),
                         options=dict(options or {}))
