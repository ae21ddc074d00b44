"""The execution DAG rebuilt from events, its feedback cut, and its exports."""
from __future__ import annotations

import json

import networkx as nx
import pytest

from optimizer_service.graph import GraphBuilder, feedback_subgraph, trainable_in
from optimizer_service.graph_export import UnknownFormat, export_graph

FUNC = {"id": 7, "module": "app", "qualname": "answer", "trainable": True}
SITE = {"id": 70, "func": 7, "op": "binary", "line": 3, "col": 4, "text": "a + b"}


def build(events, client=1, episode=1):
    builder = GraphBuilder({7: FUNC}, {70: SITE})
    builder.add_events(client, episode, events)
    return builder


def test_call_events_become_value_and_op_nodes_with_contract_attributes():
    g = build([
        ["v", 1, {"t": "str", "id": 10, "v": "hi"}], ["param", 1, "prompt"],
        ["call", 5, 7, None, [["q", 1]], 1, 100], ["v", 2, {"t": "int", "id": 11, "v": 3}], ["ret", 5, 2, 200],
    ]).graph
    assert g.nodes[("v", 1, 1)] == {"kind": "value", "summary": {"t": "str", "id": 10, "v": "hi"},
                                    "param": "prompt", "producer": None}
    assert g.nodes[("op", 1, 5)] == {"kind": "call", "func": FUNC, "parent": None, "error": None}
    assert g.nodes[("v", 1, 2)]["producer"] == ("op", 1, 5)
    assert g.edges[("v", 1, 1), ("op", 1, 5)] == {"arg": "q"} and g.has_edge(("op", 1, 5), ("v", 1, 2))


def test_op_events_nested_calls_parameter_reads_and_exceptions():
    g = build([
        ["call", 5, 7, None, [], 1, 0], ["call", 6, 7, 5, [], 1, 0],
        ["v", 1, {"t": "int", "id": 1, "v": 1}], ["v", 2, {"t": "int", "id": 2, "v": 2}],
        ["op", 8, 6, 70, "add", [1, 2], 3], ["read", 6, "k", 9],
        ["exc", 6, "ValueError", "boom", "Traceback...", 0],
    ]).graph
    assert g.nodes[("op", 1, 6)]["parent"] == ("op", 1, 5)
    assert g.nodes[("op", 1, 8)]["kind"] == "op" and g.nodes[("op", 1, 8)]["site"]["text"] == "a + b"
    assert g.edges[("v", 1, 2), ("op", 1, 8)]["arg"] == 1 and g.nodes[("v", 1, 3)]["producer"] == ("op", 1, 8)
    assert g.nodes[("v", 1, 9)]["param"] == "k"
    assert g.nodes[("op", 1, 6)]["error"] == {"type": "ValueError", "message": "boom", "traceback": "Traceback..."}


def test_clients_are_namespaced_so_equal_node_ids_never_merge():
    builder = GraphBuilder()
    builder.add_events(1, 1, [["v", 1, {"t": "int", "id": 1, "v": 1}]])
    builder.add_events(2, 1, [["v", 1, {"t": "int", "id": 1, "v": 2}]])
    assert builder.graph.number_of_nodes() == 2


def test_bad_events_are_counted_and_described_and_the_rest_is_built():
    builder = build([["zzz", 1], "not a list", ["call", "x"], ["v", 1, {"t": "int", "id": 1, "v": 1}]])
    assert builder.report.invalid_events == 3
    assert "unknown or missing tag" in builder.report.problems[0] and "bad 'call' event" in builder.report.problems[2]
    assert builder.graph.has_node(("v", 1, 1))


def test_feedback_subgraph_holds_exactly_the_ancestors_of_the_targets():
    g = build([
        ["v", 1, {"t": "str", "id": 1, "v": "a"}], ["param", 1, "used"],
        ["v", 2, {"t": "str", "id": 2, "v": "b"}], ["param", 2, "unused"],
        ["call", 5, 7, None, [["x", 1]], 1, 0], ["ret", 5, 3, 0],
        ["call", 6, 7, None, [["x", 2]], 1, 0], ["ret", 6, 4, 0],
    ]).graph
    sub = feedback_subgraph(g, [("v", 1, 3), ("v", 9, 9)])
    assert set(sub.nodes) == {("v", 1, 1), ("op", 1, 5), ("v", 1, 3)}
    assert sub.nodes[("v", 1, 1)]["param"] == "used" and sub.edges[("v", 1, 1), ("op", 1, 5)]["arg"] == "x"
    assert trainable_in(sub) == ({"used"}, {7})


@pytest.mark.timeout(30)
def test_feedback_cut_of_a_graph_with_exponentially_many_paths_is_fast():
    # Every layer feeds both nodes of the next: 2**2000 paths. A backward pass
    # that walks paths (or calls ancestors() per node) never finishes.
    events, node = [["v", 0, {"t": "int", "id": 0, "v": 0}]], 0
    previous = [0]
    op = 0
    for _ in range(2000):
        layer = []
        for _ in range(2):
            op += 1
            node += 1
            events += [["call", op, 7, None, [[f"a{i}", p] for i, p in enumerate(previous)], 1, 0], ["ret", op, node, 0]]
            layer.append(node)
        previous = layer
    g = build(events).graph
    sub = feedback_subgraph(g, [("v", 1, previous[0])])
    assert sub.number_of_nodes() == g.number_of_nodes() - 2  # all but the other op and value of the last layer


@pytest.fixture
def small_graph():
    return build([
        ["v", 1, {"t": "str", "id": 1, "v": 'say "hi"\nplease'}], ["param", 1, "prompt"],
        ["call", 5, 7, None, [["q", 1]], 1, 0], ["v", 2, {"t": "bytes", "id": 2, "v": b"\x00\xff"}],
        ["ret", 5, 2, 0], ["exc", 5, "KeyError", "'x'", "tb", 0],
    ]).graph


def test_json_export_round_trips_through_node_link_graph(small_graph):
    data = json.loads(export_graph(small_graph, "json"))
    again = nx.node_link_graph(data, edges="edges")
    assert again.number_of_nodes() == 3 and again.number_of_edges() == 2
    value = [n for n in data["nodes"] if n["id"] == ["v", 1, 2]][0]
    assert value["summary"]["v"] == {"base64": "AP8="}


def test_graphml_export_is_readable_by_networkx(small_graph, tmp_path):
    path = tmp_path / "g.graphml"
    path.write_text(export_graph(small_graph, "graphml"))
    g = nx.read_graphml(path)
    assert g.nodes["v:1:1"]["param"] == "prompt" and g.nodes["op:1:5"]["label"] == "answer()"
    assert json.loads(g.nodes["op:1:5"]["error"])["type"] == "KeyError"


def test_dot_export_quotes_labels_and_marks_params_and_errors(small_graph):
    dot = export_graph(small_graph, "dot")
    assert dot.startswith("digraph trace {") and dot.rstrip().endswith("}")
    assert '\\"hi\\"' in dot and "\n  " in dot
    assert 'fillcolor="#ffe9a8"' in dot and "color=red" in dot and "KeyError" in dot
    assert '"v:1:1" -> "op:1:5" [label="q"];' in dot


def test_unknown_export_format_names_the_known_ones(small_graph):
    with pytest.raises(UnknownFormat, match="dot, graphml, json"):
        export_graph(small_graph, "svg")


def test_events_with_extra_trailing_fields_from_a_newer_minor_version_are_accepted():
    g = build([["v", 1, {"t": "int", "id": 1, "v": 1}, "future"], ["call", 5, 7, None, [["x", 1]], 1, 0, "future"],
               ["ret", 5, 2, 0, "future"]]).graph
    assert g.has_edge(("v", 1, 1), ("op", 1, 5)) and g.has_edge(("op", 1, 5), ("v", 1, 2))


def test_bad_event_message_names_the_field_at_fault():
    builder = build([["call", 5, 7, "parent?", [], 1, 0]])
    assert "call.parent_op" in builder.report.problems[0]


def _nested_agent_events():
    # agent(q) is marked at call granularity; inside it, the trainable
    # decide(r) and greet(lang, name) run. greet's result is what agent
    # returns, but (like a None passed between them) it surfaces as no edge.
    return [
        ["v", 1, {"t": "str", "id": 1, "v": "Hola, soy Juan"}],
        ["call", 10, 7, None, [["q", 1]], 1, 0],
        ["v", 2, {"t": "str", "id": 2, "v": "Spanish"}],
        ["call", 11, 7, 10, [["response", 2]], 1, 0],
        ["v", 3, {"t": "NoneType", "id": 3, "v": None}], ["ret", 11, 3, 0],
        ["v", 4, {"t": "str", "id": 4, "v": "Juan"}],
        ["call", 12, 7, 10, [["name", 4]], 1, 0],
        ["v", 5, {"t": "str", "id": 5, "v": "Hola, Juan!"}], ["ret", 12, 5, 0],
        ["v", 6, {"t": "str", "id": 5, "v": "Hola, Juan!"}], ["ret", 10, 6, 0],
        ["call", 20, 7, None, [["q", 1]], 1, 0],  # an unrelated top-level call
    ]


def test_the_cut_includes_marked_calls_made_inside_an_included_call():
    g = build(_nested_agent_events()).graph
    cut = feedback_subgraph(g, [("v", 1, 6)])
    inner = {("op", 1, 11), ("op", 1, 12)}
    assert inner <= set(cut)
    # ...with their outputs and their inputs, so the optimizer sees them run
    assert {("v", 1, 3), ("v", 1, 5), ("v", 1, 2), ("v", 1, 4)} <= set(cut)
    assert ("op", 1, 20) not in cut


def test_a_call_traced_operation_by_operation_pulls_in_only_what_flowed():
    events = _nested_agent_events() + [
        # the same outer call, but traced at op granularity: its inside has exact edges
        ["v", 7, {"t": "str", "id": 7, "v": "x"}],
        ["op", 30, 10, 70, "add", [5], 7],
    ]
    g = build(events).graph
    cut = feedback_subgraph(g, [("v", 1, 6)])
    assert ("op", 1, 11) not in cut and ("op", 1, 12) not in cut
