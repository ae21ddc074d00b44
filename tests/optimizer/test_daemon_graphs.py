"""Problem instances from graphs the daemon builds out of trace events (internals §3 -> §5)."""
from __future__ import annotations

from optimizer_service.graph import GraphBuilder, feedback_subgraph
from optimizer_service.optoprime.instance import LEVELS, render_instance
from optimizer_service.optoprime.problem import analyse
from optimizer_service.optoprime.prompts import DEFAULT_OBJECTIVE
from optimizer_service.step_types import FeedbackItem, ParamState, StepInput
from protocol.values import summarize

CLIENT = 3
BAR = {"id": 11, "module": "__main__", "qualname": "bar", "source": "def bar(x):\n    return x * 2\n",
       "doc": "Multiply x by two.", "signature": "(x)", "file": "numeric.py", "line": 18, "trainable": False,
       "freevars": []}
FOO = {"id": 12, "module": "__main__", "qualname": "foo", "source": "def foo(y):\n    return y + 1\n",
       "doc": "Add one to y.", "signature": "(y)", "file": "numeric.py", "line": 23, "trainable": False,
       "freevars": []}
SCALE = {"id": 13, "module": "__main__", "qualname": "scale", "source": "def scale(v):\n    return v * FACTOR\n",
         "doc": None, "signature": "(v)", "file": "numeric.py", "line": 30, "trainable": True, "freevars": []}


def step_input(events: list[list], feedback_node: int, params: list[ParamState]) -> StepInput:
    builder = GraphBuilder({11: BAR, 12: FOO, 13: SCALE}, {})
    builder.add_events(CLIENT, 1, events)
    assert builder.report.invalid_events == 0, builder.report.problems
    target = ("v", CLIENT, feedback_node)
    return StepInput(session="s", step_index=0, graph=feedback_subgraph(builder.graph, [target]),
                     feedback=[FeedbackItem(node=target, text="The number needs to be larger.", client=CLIENT)],
                     params={p.name: p for p in params})


def test_call_mode_events_of_the_numeric_example():
    events = [
        ["v", 1, summarize(-1.0)], ["param", 1, "__main__:X"],
        ["call", 1, 11, None, [["x", 1]], 0, 10],
        ["v", 2, summarize(-2.0)], ["ret", 1, 2, 11],
        ["call", 2, 12, None, [["y", 2]], 0, 12],
        ["v", 3, summarize(-1.0)], ["ret", 2, 3, 13],
    ]
    problem = step_input(events, 3, [ParamState("__main__:X", "float", -1.0, kind="global")])
    instance = render_instance(analyse(problem), DEFAULT_OBJECTIVE, LEVELS[0])[0]
    assert "#Code\nbar_output = bar(x=X)\nfoo_output = foo(y=bar_output)\n" in instance
    assert "#Variables\n(float) X=-1.0\n" in instance
    assert "#Others\n(float) bar_output=-2.0\n" in instance
    assert "#Outputs\n(float) foo_output=-1.0\n" in instance
    assert "#Documentation\n[bar] Multiply x by two.\n[foo] Add one to y.\n" in instance


def test_a_parameter_read_event_and_a_trainable_function():
    events = [
        ["v", 1, summarize(2.0)],
        ["call", 1, 13, None, [["v", 1]], 0, 10],
        ["v", 5, summarize(3.0)], ["read", 1, "__main__:FACTOR", 5],
        ["v", 2, summarize(6.0)], ["ret", 1, 2, 11],
    ]
    params = [ParamState("__main__:FACTOR", "float", 3.0, kind="global"),
              ParamState("__main__:scale", "code", SCALE["source"], kind="source", signature="(v)",
                         func_id=SCALE["id"])]
    instance = render_instance(analyse(step_input(events, 2, params)), DEFAULT_OBJECTIVE, LEVELS[0])[0]
    assert "#Code\nscale_output = scale(v=v, __code=scale_code)  # reads FACTOR\n" in instance
    assert "(float) FACTOR=3.0\n(code) scale_code:def scale(v):\n    return v * FACTOR" in instance
    assert "[scale] def scale(v):\n    return v * FACTOR" in instance


def test_an_exception_event_becomes_an_output():
    events = [
        ["v", 1, summarize(0.0)], ["param", 1, "__main__:X"],
        ["call", 1, 11, None, [["x", 1]], 0, 10],
        ["exc", 1, "ZeroDivisionError", "float division by zero", "Traceback ...\n  x / 0", 11],
        ["v", 2, summarize(None)], ["ret", 1, 2, 12],
    ]
    problem = step_input(events, 2, [ParamState("__main__:X", "float", 0.0)])
    instance = render_instance(analyse(problem), DEFAULT_OBJECTIVE, LEVELS[0])[0]
    assert "bar_output, bar_error = bar(x=X)" in instance
    assert "(ZeroDivisionError) bar_error=ZeroDivisionError: float division by zero" in instance


def test_a_trainable_function_traced_op_by_op_is_one_line_running_its_code():
    # Op mode: scale's insides are traced, but its body is the variable the
    # LLM edits, so the call is one line and the operations in it are hidden.
    builder_sites = {21: {"id": 21, "func": 13, "op": "BINARY_OP", "line": 31, "col": 11, "text": "v * FACTOR"}}
    events = [
        ["v", 1, summarize(2.0)], ["v", 5, summarize(3.0)], ["param", 5, "__main__:FACTOR"],
        ["call", 1, 13, None, [["v", 1]], 0, 10],
        ["v", 2, summarize(6.0)], ["op", 2, 1, 21, "mul", [1, 5], 2],
        ["ret", 1, 2, 11],
        ["call", 3, 11, None, [["x", 2]], 0, 12],
        ["v", 4, summarize(12.0)], ["ret", 3, 4, 13],
    ]
    builder = GraphBuilder({11: BAR, 13: SCALE}, builder_sites)
    builder.add_events(CLIENT, 1, events)
    target = ("v", CLIENT, 4)
    problem = StepInput(session="s", step_index=0, graph=feedback_subgraph(builder.graph, [target]),
                        feedback=[FeedbackItem(node=target, text="Larger.", client=CLIENT)],
                        params={"__main__:scale": ParamState("__main__:scale", "code", SCALE["source"],
                                                             kind="source", signature="(v)", func_id=SCALE["id"])})
    code = render_instance(analyse(problem), DEFAULT_OBJECTIVE, LEVELS[0])[0].split("#Code\n")[1].split("\n\n")[0]
    assert code.splitlines() == ["scale_output = scale(v=v, __code=scale_code)", "bar_output = bar(x=scale_output)"]
