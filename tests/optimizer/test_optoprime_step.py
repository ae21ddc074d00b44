"""OptoPrime.step end to end: prompt -> real SDK -> fake LLM server -> parsed, validated StepOutput."""
from __future__ import annotations

import json
import sqlite3

import pytest

from optimizer_service.llm import BudgetExhausted, LLMAuthError, session_totals
from optimizer_service.optoprime import UNREADABLE_ANSWER, OptoPrime, create_optimizer
from optimizer_service.step_types import MemoryEntry, ParamState
from tests.optimizer.graphs import TraceGraph
from tests.optimizer.test_problem_instance import GREET, numeric_example, sales_agent_example
from tests.support.fake_llm import Reply


def answer(suggestion: dict, reasoning: str = "The output must grow.") -> str:
    return json.dumps({"reasoning": reasoning, "answer": "", "suggestion": suggestion})


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_normal_step_suggests_a_converted_value(fake_llm, make_client, provider):
    fake_llm.add_replies(Reply(answer({"x": "25"})))
    _, problem = numeric_example()
    output = OptoPrime(make_client(provider), memory_size=0).step(problem)
    assert output.suggestion == {"app:x": 25.0}
    assert output.rejected == {}
    assert output.reasoning == "The output must grow."
    assert not output.terminate
    assert [c.provider for c in output.llm_calls] == [provider]
    sent = fake_llm.requests[0].prompt_text
    assert "#Variables\n(float) x=-1.0" in sent
    assert "#Feedback\nThe number needs to be larger." in sent
    assert output.prompt.startswith("\nYou're tasked to solve a coding/algorithm problem.")


def test_code_and_text_suggestions_for_the_sales_agent(fake_llm, make_client):
    new_greet = GREET.replace('greeting = "Hola"', 'greeting = "Hola" if lang == "es" else "Hello"')
    fake_llm.add_replies(Reply(answer({"instruct1": "Decide the language: answer es or en", "greet_code": new_greet})))
    output = OptoPrime(make_client()).step(sales_agent_example())
    assert output.suggestion == {"app:Agent.instruct1": "Decide the language: answer es or en",
                                 "app:Agent.greet": new_greet}


@pytest.mark.parametrize("bad_code, reason", [
    ('def greet(self, lang, user_name):\n    return f"Hola, {user_name}!\n', "does not parse"),
    ('def greet(self, user_name):\n    return f"Hola, {user_name}!"\n', "signature changed"),
])
def test_bad_code_is_rejected_never_suggested_and_the_reason_reported(fake_llm, make_client, bad_code, reason):
    fake_llm.add_replies(Reply(answer({"greet_code": bad_code, "instruct2": "Extract the user's name"})))
    output = OptoPrime(make_client()).step(sales_agent_example())
    assert "app:Agent.greet" not in output.suggestion
    assert reason in output.rejected["app:Agent.greet"]
    assert output.suggestion == {"app:Agent.instruct2": "Extract the user's name"}


def test_an_unreadable_answer_is_asked_again_once_with_the_error(fake_llm, make_client):
    fake_llm.add_replies(Reply("Sure! I would make x much larger, maybe 30."), Reply(answer({"x": 30})))
    _, problem = numeric_example()
    output = OptoPrime(make_client()).step(problem)
    assert output.suggestion == {"app:x": 30.0}
    assert fake_llm.request_count == 2
    reask = fake_llm.requests[1].body["messages"]
    assert reask[-2] == {"role": "assistant", "content": "Sure! I would make x much larger, maybe 30."}
    assert "could not be read" in reask[-1]["content"] and "no JSON object found" in reask[-1]["content"]
    assert len(output.llm_calls) == 2


def test_two_unreadable_answers_end_the_step_with_a_reported_rejection(fake_llm, make_client):
    fake_llm.add_replies(Reply("no idea"), Reply("still no idea"))
    _, problem = numeric_example()
    output = OptoPrime(make_client()).step(problem)
    assert output.suggestion == {}
    assert "even after asking again" in output.rejected[UNREADABLE_ANSWER]
    assert fake_llm.request_count == 2


def test_terminate_changes_nothing(fake_llm, make_client):
    fake_llm.add_replies(Reply("TERMINATE"))
    _, problem = numeric_example()
    output = OptoPrime(make_client()).step(problem)
    assert output.terminate and output.suggestion == {} and output.rejected == {}


def test_a_repeated_step_is_answered_from_the_cache_without_http(fake_llm, make_client):
    fake_llm.add_replies(Reply(answer({"x": 25})))
    _, problem = numeric_example()
    optimizer = OptoPrime(make_client())
    first = optimizer.step(problem)
    second = optimizer.step(problem)
    assert fake_llm.request_count == 1
    assert second.suggestion == first.suggestion
    assert second.llm_calls[0].cached


def test_an_unreadable_answer_is_not_replayed_from_the_cache_when_the_step_is_retried(fake_llm, make_client):
    fake_llm.add_replies(Reply("no idea"), Reply("still no idea"), Reply(answer({"x": 25})))
    _, problem = numeric_example()
    optimizer = OptoPrime(make_client())
    assert UNREADABLE_ANSWER in optimizer.step(problem).rejected
    retried = optimizer.step(problem)
    assert retried.suggestion == {"app:x": 25.0}
    assert not retried.llm_calls[0].cached and fake_llm.request_count == 3


def test_the_cache_can_be_switched_off_for_one_step(fake_llm, make_client):
    fake_llm.add_replies(Reply(answer({"x": 25})), Reply(answer({"x": 26})))
    _, problem = numeric_example()
    optimizer = OptoPrime(make_client())
    optimizer.step(problem)
    problem.options = {"cache": "off"}
    assert optimizer.step(problem).suggestion == {"app:x": 26.0}
    assert fake_llm.request_count == 2


def test_the_call_budget_stops_optimisation(fake_llm, make_client):
    fake_llm.add_replies(Reply(answer({"x": 25})), Reply(answer({"x": 26})))
    _, problem = numeric_example()
    optimizer = OptoPrime(make_client(max_llm_calls=1))
    optimizer.step(problem)
    problem.feedback[0].text = "Still too small."
    with pytest.raises(BudgetExhausted, match="max_llm_calls=1"):
        optimizer.step(problem)
    assert fake_llm.request_count == 1


def test_an_authentication_error_fails_the_step_at_once(fake_llm, make_client):
    fake_llm.add_replies(Reply.error(401, "bad key"), Reply(answer({"x": 1})))
    _, problem = numeric_example()
    with pytest.raises(LLMAuthError):
        OptoPrime(make_client(max_retries=3)).step(problem)
    assert fake_llm.request_count == 1


def test_memory_size_limits_the_past_entries_in_the_prompt(fake_llm, make_client):
    fake_llm.add_replies(Reply(answer({"x": 5})))
    _, problem = numeric_example()
    problem.memory = [MemoryEntry({"app:x": float(v)}, f"feedback {v}") for v in range(-5, 0)]
    OptoPrime(make_client(), memory_size=2).step(problem)
    sent = fake_llm.requests[0].prompt_text
    assert "Below are some variables and their feedbacks you received in the past." in sent
    assert '"feedback": "feedback -2"' in sent and '"feedback": "feedback -1"' in sent
    assert "feedback -3" not in sent


def test_memory_entry_records_the_variables_shown_and_the_feedback():
    _, problem = numeric_example()
    assert OptoPrime.memory_entry(problem) == MemoryEntry({"app:x": -1.0}, "The number needs to be larger.")


def test_daemon_factory_uses_the_session_config_and_database(fake_llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_llm.openai_base_url)
    fake_llm.add_replies(Reply(answer({"x": 7})))
    database = str(tmp_path / "daemon.db")
    optimizer = create_optimizer(session="s1", config={"llm": "openai:gpt-4o-mini", "memory_size": 0,
                                                       "max_llm_calls": 10}, database=database)
    _, problem = numeric_example()
    problem.session = "s1"
    assert optimizer.step(problem).suggestion == {"app:x": 7.0}
    assert fake_llm.requests[0].body["model"] == "gpt-4o-mini"
    assert session_totals(sqlite3.connect(database), "s1").calls == 1


def test_unknown_suggestion_keys_are_reported(fake_llm, make_client):
    fake_llm.add_replies(Reply(answer({"x": 3, "bar_output": 9})))
    _, problem = numeric_example()
    output = OptoPrime(make_client()).step(problem)
    assert output.suggestion == {"app:x": 3.0}
    assert "not a variable in #Variables" in output.rejected["bar_output"]


def test_rejections_from_the_last_step_reach_the_llm(fake_llm, make_client):
    fake_llm.add_replies(Reply(answer({"x": 3})))
    g = TraceGraph()
    n = g.param_value("app:n", 3)
    out = g.call("f", {"n": n}, returns=3)
    problem = g.step_input(feedback={out: "larger"}, params=[ParamState("app:n", "int", 3)],
                           rejections=["app:n: 4.5 is not a whole number, and the variable is an int"])
    OptoPrime(make_client()).step(problem)
    assert "- app:n: 4.5 is not a whole number" in fake_llm.requests[0].prompt_text
