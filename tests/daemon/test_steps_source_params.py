"""A step gives every source parameter the id of its function, and picks it when that function was called.

`run_step` runs here on a real SQLite store with definitions in the shape
the tracer sends them (a source ParamDef names its function by `where` as
"module:qualname"; the function's FunctionDef carries the id that call
events use). The optimizer is a small recording `Optimizer`: the test reads
back the `StepInput` the daemon built.
"""
from __future__ import annotations

import os
from typing import Any

import pytest

from optimizer_service.steps import EpisodeSnapshot, SourceFunctions, StepJob, run_step
from optimizer_service.step_types import StepInput, StepOutput
from optimizer_service.store import Store

SESSION = "s"


class RecordingOptimizer:
    """Suggests nothing; keeps the StepInput it was given."""

    def __init__(self) -> None:
        self.problems: list[StepInput] = []

    def step(self, problem: StepInput) -> StepOutput:
        self.problems.append(problem)
        return StepOutput(suggestion={}, terminate=True)


def function_def(func_id: int, module: str, qualname: str, signature: str = "(self, name)") -> dict[str, Any]:
    name = qualname.rsplit(".", 1)[-1]
    return {"id": func_id, "module": module, "qualname": qualname, "source": f"def {name}{signature}: ...\n",
            "doc": None, "signature": signature, "file": f"{module}.py", "line": 1, "trainable": True,
            "freevars": []}


def source_param(name: str, module: str, qualname: str) -> dict[str, Any]:
    """A source ParamDef as tracer/params.py sends it."""
    short = qualname.rsplit(".", 1)[-1]
    return {"name": name, "type": "code", "value": f"def {short}(self, name): ...\n", "constraint": None,
            "kind": "source", "where": f"{module}:{qualname}", "trainable": True}


def calls_of(*func_ids: int) -> list[list]:
    """One episode calling each function in turn, each on the previous output; the last output is node 1000."""
    events: list[list] = [["v", 1, {"t": "str", "id": 1, "v": "Juan"}]]
    previous = 1
    for index, func_id in enumerate(func_ids):
        out = 1000 if index == len(func_ids) - 1 else 100 + index
        events += [["call", 10 + index, func_id, None, [["name", previous]], 1, index],
                   ["v", out, {"t": "str", "id": 2 + index, "v": f"out {index}"}],
                   ["ret", 10 + index, out, index]]
        previous = out
    return events


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(os.path.join(tmp_path, "state.db"))
    store.ensure_session(SESSION)
    yield store
    store.close()


def step_input(store: Store, functions: list[dict], params: list[dict], events: list[list]) -> StepInput:
    """The StepInput the daemon builds for one episode of `events` with feedback on node 1000."""
    store.save_definitions(SESSION, functions, params)
    client = store.add_client(SESSION, pid=1, argv=["app.py"], python="3", name="app", granularity="call")
    store.add_feedback(SESSION, client, 1, 1000, "Say hello in Spanish.", None)
    job = StepJob(session=SESSION, options={}, config={},
                  episodes=[EpisodeSnapshot(client_id=client, episode=1, events=events)],
                  functions={f["id"]: f for f in functions}, sites={})
    optimizer = RecordingOptimizer()
    result = run_step(store, optimizer, job)
    assert result.ok, result.error
    return optimizer.problems[0]


def test_a_methods_source_parameter_carries_its_function_id_signature_and_free_variables(store):
    greet = function_def(501, "app", "Agent.greet")
    greet["freevars"] = ["GREETING"]
    problem = step_input(store, [greet], [source_param("app.Agent.greet", "app", "Agent.greet")], calls_of(501))
    state = problem.params["app.Agent.greet"]
    assert (state.func_id, state.signature, state.freevars) == (501, "(self, name)", ["GREETING"])


def test_a_nested_functions_source_parameter_is_matched_by_its_locals_qualname(store):
    inner = function_def(502, "app", "make.<locals>.inner", signature="(name)")
    problem = step_input(store, [inner], [source_param("app.make.inner", "app", "make.<locals>.inner")],
                         calls_of(502))
    assert problem.params["app.make.inner"].func_id == 502


def test_same_named_functions_of_two_modules_each_get_their_own_id(store):
    functions = [function_def(601, "shop", "Agent.greet"), function_def(602, "bank", "Agent.greet")]
    params = [source_param("shop.Agent.greet", "shop", "Agent.greet"),
              source_param("bank.Agent.greet", "bank", "Agent.greet")]
    problem = step_input(store, functions, params, calls_of(601, 602))
    assert {name: p.func_id for name, p in problem.params.items()} == \
        {"shop.Agent.greet": 601, "bank.Agent.greet": 602}


def test_only_the_source_of_the_function_that_ran_joins_the_step(store):
    # bank.Agent.greet has the same name but was not called: its source is not part of this feedback.
    functions = [function_def(601, "shop", "Agent.greet"), function_def(602, "bank", "Agent.greet")]
    params = [source_param("shop.Agent.greet", "shop", "Agent.greet"),
              source_param("bank.Agent.greet", "bank", "Agent.greet")]
    problem = step_input(store, functions, params, calls_of(601))
    assert list(problem.params) == ["shop.Agent.greet"]


def test_a_script_run_as_main_is_matched_although_its_parameter_is_named_after_the_file(store):
    # tracer names the parameter after the file (agent.Agent.greet) but the
    # function lives in __main__: `where` says so, and only `where` is used.
    greet = function_def(701, "__main__", "Agent.greet")
    problem = step_input(store, [greet], [source_param("agent.Agent.greet", "__main__", "Agent.greet")],
                         calls_of(701))
    assert problem.params["agent.Agent.greet"].func_id == 701


def test_a_source_parameter_whose_function_was_never_defined_has_no_function_id(store, caplog):
    # The FunctionDef never reached the daemon: the parameter is still offered
    # (no other parameter is in the graph), without a function to attach it
    # to, and the daemon's log says why.
    problem = step_input(store, [function_def(801, "app", "other")],
                         [source_param("app.lost", "app", "lost")], calls_of(801))
    state = problem.params["app.lost"]
    assert (state.func_id, state.signature) == (None, None)
    assert "source parameter 'app.lost' names function 'app:lost'" in caplog.text


@pytest.mark.parametrize("where, expected", [
    ("shop:Agent.greet", 601),
    ("bank:Agent.greet", 602),
    ("Agent.greet", None),            # a bare qualname two modules share: ambiguous
    ("Agent.wave", 603),              # a bare qualname only one function has
    ("shop:Agent.wave", None),        # right qualname, wrong module
    ("", None),
])
def test_source_functions_resolve_where_exactly(where, expected):
    functions = {601: function_def(601, "shop", "Agent.greet"), 602: function_def(602, "bank", "Agent.greet"),
                 603: function_def(603, "bank", "Agent.wave")}
    definition = {"name": "p", "kind": "source", "where": where}
    assert SourceFunctions(functions).function_of(definition) == expected


def test_malformed_definitions_match_no_function_instead_of_failing():
    functions = {901: {"id": 901, "module": None, "qualname": "greet"},        # a FunctionDef without a module
                 902: {"id": 902, "module": "app", "qualname": ["not", "a", "str"]}}
    sources = SourceFunctions(functions)
    assert sources.function_of({"name": "p", "kind": "source", "where": "None:greet"}) is None
    assert sources.function_of({"name": "p", "kind": "source", "where": 42}) is None
    assert sources.function_of({"name": 7, "kind": "source"}) is None
