"""Closing the loop on a prompt: a module-level string marked as a parameter on the command line is
optimised by the daemon through the Anthropic SDK and patched into the running process."""
from __future__ import annotations

import pytest

from tests.e2e.helpers import is_optoprime_prompt, optoprime_answer, optoprime_variables, write_files

PROMPTS = '''\
PROMPT = "hi {name}"


def greet(name):
    return PROMPT.format(name=name)
'''

DRIVER = '''\
import tracer
import prompts

out = prompts.greet("Ada")
print("before", out, flush=True)
tracer.feedback(out, "Greet politely: start with 'Hello' and end with '!'.")
print("step", tracer.step(timeout=60), flush=True)
print("after", prompts.greet("Ada"), prompts.PROMPT, flush=True)
'''

MARKING = ["--session", "prompts", "--target", "prompts:greet", "--param", "prompts:PROMPT"]


@pytest.fixture
def loop(loop_env):
    """A daemon started with TRACE_LLM=anthropic:..., as a user of Anthropic would run it."""
    loop_env.provider = "anthropic"
    loop_env.start_daemon()
    return loop_env


def answer_with_polite_prompt(request):
    if not is_optoprime_prompt(request):
        return optoprime_answer({})
    names = [name for type_name, name, _ in optoprime_variables(request.prompt_text) if type_name == "str"]
    return optoprime_answer({name: "Hello {name}!" for name in names})


def test_prompt_marked_as_a_parameter_is_fixed_through_the_anthropic_sdk(loop, project):
    loop.answer = answer_with_polite_prompt
    write_files(project, {"prompts.py": PROMPTS, "driver.py": DRIVER})

    run = loop.trace_run([*MARKING, "driver.py"], project)

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "before hi Ada"
    assert lines[1] == "step version 1: prompts.PROMPT: 'hi {name}' -> 'Hello {name}!'"
    assert lines[2] == "after Hello Ada! Hello {name}!"
    [request] = loop.llm.requests
    assert request.path == "/v1/messages" and request.provider == "anthropic"
    assert request.body["model"] == "claude-test"
    # Anthropic SDKs send the key as x-api-key (1.x) or as a bearer token (2.x).
    assert "test-key" in (request.headers.get("x-api-key", "") + request.headers.get("authorization", ""))


def test_prompt_parameter_value_is_shown_to_the_optimizer_as_a_variable(loop, project):
    loop.answer = answer_with_polite_prompt
    write_files(project, {"prompts.py": PROMPTS, "driver.py": DRIVER})

    run = loop.trace_run([*MARKING, "driver.py"], project)

    assert run.returncode == 0, run.stderr
    [request] = loop.llm.requests
    variables = optoprime_variables(request.prompt_text)
    assert [(type_name, value) for type_name, _, value in variables] == [("str", "'hi {name}'")]
