"""The `tracer` API a program calls, end to end: every failure is a specific exception the program can
catch and go on from, and the state it reports (parameters, versions, sessions) is the live one."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.helpers import is_optoprime_prompt, optoprime_answer, optoprime_variables, write_files
from tests.support.fake_llm import Reply

APP = '''\
PROMPT = "hi {name}"


def greet(name):
    return PROMPT.format(name=name)


def total(prices):
    """Sum the prices."""
    return sum(prices)
'''

MARKING = ["--session", "api", "--target", "app:greet", "--trainable", "app:total", "--param", "app:PROMPT"]


def polite_prompt(request):
    if not is_optoprime_prompt(request):
        return optoprime_answer({})
    return optoprime_answer({name: "Hello {name}!" for type_name, name, _ in
                             optoprime_variables(request.prompt_text) if type_name == "str"})


def run_program(loop, project, body: str, *marking: str):
    """Run `body` (a script importing app) under trace-run with MARKING; return the completed process."""
    write_files(project, {"app.py": APP, "program.py": body})
    return loop.trace_run([*(marking or MARKING), "program.py"], project)


def lines_of(run) -> list[str]:
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


# -- feedback ------------------------------------------------------------------

def test_feedback_on_a_value_the_tracer_never_saw_raises_unknown_value_naming_the_marked_functions(loop, project):
    run = run_program(loop, project, '''\
        import tracer, app
        app.greet("Ada")
        try:
            tracer.feedback("a string no traced code returned", "wrong")
        except tracer.UnknownValue as exc:
            print("UnknownValue:", exc)
        print("the program goes on:", app.greet("Bob"))
    ''')

    unknown, goes_on = lines_of(run)
    assert unknown.startswith("UnknownValue: feedback() got a str that no traced function produced")
    assert "app:greet" in unknown and "app:total" in unknown
    assert goes_on == "the program goes on: hi Bob"


def test_feedback_after_the_episode_was_released_by_a_step_raises_unknown_value(loop, project):
    loop.answer = polite_prompt
    run = run_program(loop, project, '''\
        import tracer, app
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        tracer.step(timeout=60)
        try:
            tracer.feedback(out, "still wrong")
        except tracer.UnknownValue as exc:
            print("UnknownValue")
    ''')

    assert lines_of(run) == ["UnknownValue"]


# -- step failures ---------------------------------------------------------------

STEP_AND_GO_ON = '''\
    import tracer, app
    out = app.greet("Ada")
    tracer.feedback(out, "Greet politely: 'Hello ...!'")
    try:
        tracer.step(timeout=60)
    except tracer.StepFailed as exc:
        print(type(exc).__name__, "|", exc.reason)
    print("the program goes on:", app.greet("Bob"), app.total([1, 2]))
'''


def test_llm_failure_raises_llm_failed_with_the_reason_and_the_program_goes_on(loop, project):
    loop.answer = lambda request: Reply.error(401, "Incorrect API key provided: test-key")

    failed, goes_on = lines_of(run_program(loop, project, STEP_AND_GO_ON))

    name, reason = failed.split(" | ", 1)
    assert name == "LLMFailed"
    assert "HTTP 401" in reason and "OPENAI_API_KEY" in reason, reason  # what failed, and what to check
    assert goes_on == "the program goes on: hi Bob 3"
    assert loop.daemon_cli("status").returncode == 0  # the daemon is still there


def test_second_step_over_max_llm_calls_raises_budget_exhausted(loop, project):
    loop.answer = polite_prompt
    run = run_program(loop, project, '''\
        import tracer, app
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        print("first", tracer.step(timeout=60, max_llm_calls=1).version)
        out = app.greet("Ada")
        tracer.feedback(out, "Now add the time of day.")
        try:
            tracer.step(timeout=60)
        except tracer.BudgetExhausted as exc:
            print("BudgetExhausted |", exc.reason)
        print("the program goes on:", app.greet("Bob"))
    ''')

    first, exhausted, goes_on = lines_of(run)
    assert first == "first 1"
    assert exhausted.startswith("BudgetExhausted | ") and "max_llm_calls" in exhausted
    assert goes_on == "the program goes on: Hello Bob!"
    assert len(loop.optoprime_requests()) == 1


def test_code_with_a_changed_signature_raises_suggestion_rejected_showing_why(loop, project):
    def changed_signature(request):
        if not is_optoprime_prompt(request):
            return optoprime_answer({})
        return optoprime_answer({name: "def total(prices, tax):\n    return sum(prices) * (1 + tax)\n"
                                 for type_name, name, _ in optoprime_variables(request.prompt_text)
                                 if type_name == "code"})
    loop.answer = changed_signature
    run = run_program(loop, project, '''\
        import tracer, app
        out = app.total([1, 2])
        tracer.feedback(out, "Add 10% tax.")
        try:
            tracer.step(timeout=60)
        except tracer.SuggestionRejected as exc:
            print("SuggestionRejected |", exc.reason)
        print("the program goes on:", app.total([1, 2]))
    ''')

    rejected, goes_on = lines_of(run)
    assert rejected.startswith("SuggestionRejected | ")
    assert "signature" in rejected and "(prices, tax)" in rejected, rejected
    assert goes_on == "the program goes on: 3"


def test_step_failures_are_step_failed_and_tracer_errors():
    import tracer

    for error in (tracer.LLMFailed, tracer.BudgetExhausted, tracer.SuggestionRejected):
        assert issubclass(error, tracer.StepFailed) and issubclass(error, tracer.TracerError)


# -- parameters and sessions ------------------------------------------------------

def test_parameters_show_the_current_values_and_the_version_after_a_step(loop, project):
    loop.answer = polite_prompt
    run = run_program(loop, project, '''\
        import json, tracer, app
        def show():
            prompt = tracer.parameters()["app.PROMPT"]
            return [prompt.kind, prompt.value, prompt.version]
        print(json.dumps(show()))
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        tracer.step(timeout=60)
        print(json.dumps(show()))
        print(json.dumps(sorted(tracer.parameters())))
    ''')

    before, after, names = map(json.loads, lines_of(run))
    assert before == ["global", "hi {name}", 0]
    assert after == ["global", "Hello {name}!", 1]
    assert names == ["app.PROMPT", "app.total"]


SESSION_FROM_CODE = '''\
import json, sys
import tracer

tracer.session("from-code")


@tracer.bundle()
def greet(name):
    return PROMPT.format(name=name)


PROMPT = tracer.param("hi {name}", name="prompt")
out = greet("Ada")
tracer.feedback(out, "Greet politely: 'Hello ...!'")
print("step", tracer.step(timeout=60), flush=True)
print(greet("Ada"), flush=True)
'''


def test_session_from_code_joins_the_named_session_without_trace_run(loop, project):
    loop.answer = polite_prompt
    write_files(project, {"program.py": SESSION_FROM_CODE})

    # Plain python: the program starts tracing itself.
    run = subprocess.run([sys.executable, "program.py"], cwd=project, env=loop.environ(), capture_output=True,
                         text=True, timeout=90)

    assert lines_of(run) == ["step version 1: prompt: 'hi {name}' -> 'Hello {name}!'", "Hello Ada!"]
    status = loop.daemon_cli("status", "--json")
    sessions = {s["name"]: s for s in json.loads(status.stdout)["sessions"]}
    assert sessions["from-code"]["version"] == 1


def test_session_from_code_moves_a_trace_run_program_to_another_session(loop, project):
    loop.answer = polite_prompt
    run = run_program(loop, project, '''\
        import tracer, app
        print(tracer.session("elsewhere"))
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        print(tracer.step(timeout=60).version)
    ''')

    assert lines_of(run) == ["elsewhere", "1"]
    sessions = {s["name"]: s for s in json.loads(loop.daemon_cli("status", "--json").stdout)["sessions"]}
    assert sessions["elsewhere"]["version"] == 1
    assert sessions.get("api", {"version": 0})["version"] == 0


def test_feedback_text_that_is_not_a_string_raises_type_error(loop, project):
    run = run_program(loop, project, '''\
        import tracer, app
        out = app.greet("Ada")
        try:
            tracer.feedback(out, 42)
        except TypeError as exc:
            print("TypeError |", exc)
    ''')

    assert lines_of(run) == ["TypeError | feedback text must be a str, got int"]


def test_a_step_slower_than_its_timeout_raises_step_failed_and_its_version_arrives_later(loop, project):
    def slow_polite_prompt(request):
        reply = polite_prompt(request)
        reply.delay = 3.0
        return reply
    loop.answer = slow_polite_prompt
    run = run_program(loop, project, '''\
        import time, tracer, app
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        try:
            tracer.step(timeout=1)
        except tracer.StepFailed as exc:
            print(type(exc).__name__, exc.kind)
        print("the program goes on:", app.greet("Bob"))
        deadline = time.monotonic() + 30
        while app.greet("Bob") == "hi Bob" and time.monotonic() < deadline:
            time.sleep(0.05)
        print("later:", app.greet("Bob"))
    ''')

    assert lines_of(run) == ["StepFailed timeout", "the program goes on: hi Bob", "later: Hello Bob!"]


def test_a_step_whose_daemon_dies_raises_step_failed_and_the_program_goes_on(loop, project):
    def never_answers_in_time(request):
        loop.kill_daemon()  # the daemon is waiting for this very answer
        return Reply("TERMINATE")
    loop.answer = never_answers_in_time
    run = run_program(loop, project, '''\
        import tracer, app
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        try:
            tracer.step(timeout=30)
        except tracer.StepFailed as exc:
            print(type(exc).__name__, exc.kind)
        print("the program goes on:", app.greet("Bob"))
    ''', "--session", "dies", "--target", "app:greet", "--param", "app:PROMPT")

    assert lines_of(run) == ["StepFailed connection_lost", "the program goes on: hi Bob"]


def test_a_step_without_feedback_raises_step_failed_saying_to_give_feedback_first(loop, project):
    run = run_program(loop, project, '''\
        import tracer, app
        app.greet("Ada")
        try:
            tracer.step(timeout=30)
        except tracer.StepFailed as exc:
            print(type(exc).__name__, "|", exc)
    ''')

    [failed] = lines_of(run)
    assert failed.startswith("StepFailed | no feedback was given since the last step")
    assert "tracer.feedback(value, text)" in failed
    assert loop.llm.request_count == 0


def test_rollback_with_no_earlier_version_raises_step_failed_with_the_reason(loop, project):
    run = run_program(loop, project, '''\
        import tracer, app
        try:
            tracer.rollback()
        except tracer.StepFailed as exc:
            print(type(exc).__name__, "|", exc)
        print("the program goes on:", app.greet("Bob"))
    ''')

    assert lines_of(run) == ["StepFailed | rollback failed: session 'api' has no version to roll back from "
                             "(it is at version 0)", "the program goes on: hi Bob"]


def test_a_step_retried_after_an_unreadable_llm_answer_asks_the_llm_again(loop, project):
    answers = iter([Reply("Make it polite, {not json"), Reply("Still {not json")])
    loop.answer = lambda request: next(answers, None) or polite_prompt(request)
    run = run_program(loop, project, '''\
        import tracer, app
        out = app.greet("Ada")
        for attempt in (1, 2):
            tracer.feedback(out, "Greet politely: 'Hello ...!'")
            try:
                print(attempt, tracer.step(timeout=60).version)
            except tracer.StepFailed as exc:
                print(attempt, type(exc).__name__)
        print(app.greet("Bob"))
    ''')

    assert lines_of(run) == ["1 SuggestionRejected", "2 1", "Hello Bob!"]


def test_a_program_run_again_after_an_unreadable_llm_answer_asks_the_llm_again(loop, project):
    answers = iter([Reply("Make it polite, {not json"), Reply("Still {not json")])
    loop.answer = lambda request: next(answers, None) or polite_prompt(request)
    body = '''\
        import tracer, app
        out = app.greet("Ada")
        tracer.feedback(out, "Greet politely: 'Hello ...!'")
        try:
            print(tracer.step(timeout=60).version)
        except tracer.StepFailed as exc:
            print(type(exc).__name__)
    '''
    first = run_program(loop, project, body, "--session", "first", "--target", "app:greet", "--param", "app:PROMPT")
    assert lines_of(first) == ["SuggestionRejected"]

    again = run_program(loop, project, body, "--session", "again", "--target", "app:greet", "--param", "app:PROMPT")

    assert lines_of(again) == ["1"]


RATE_APP = '''\
RATE = 0.5


def scale(x):
    return x * RATE
'''


def test_a_rejected_suggestion_is_explained_to_the_optimizer_in_the_next_step(loop, project):
    answers = iter(["a lot", 2.0])

    def wrong_type_then_right(request):
        if not is_optoprime_prompt(request):
            return optoprime_answer({})
        value = next(answers)
        return optoprime_answer({name: value for type_name, name, _ in optoprime_variables(request.prompt_text)
                                 if type_name == "float"})
    loop.answer = wrong_type_then_right
    write_files(project, {"app.py": RATE_APP, "program.py": '''\
        import tracer, app
        out = app.scale(2)
        for attempt in (1, 2):
            tracer.feedback(out, "The result must be larger.")
            try:
                print(attempt, tracer.step(timeout=60))
            except tracer.SuggestionRejected as exc:
                print(attempt, "SuggestionRejected |", exc.reason)
        print(app.scale(2))
    '''})

    run = loop.trace_run(["--session", "rate", "--target", "app:scale", "--param", "app:RATE", "program.py"], project)

    first, second, result = lines_of(run)
    assert first == "1 SuggestionRejected | every suggestion was rejected: app.RATE: suggested value for RATE " \
                    "rejected: 'a lot' is not a float literal"
    assert second == "2 version 1: app.RATE: 0.5 -> 2.0"
    assert result == "4.0"
    retry_prompt = loop.optoprime_requests()[1].prompt_text
    assert "'a lot' is not a float literal" in retry_prompt
