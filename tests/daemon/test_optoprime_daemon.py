"""The real daemon with its default optimizer (OptoPrime) and an LLM on loopback."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from protocol import messages as m
from tests.daemon.support import Client, stop_process

fake_llm = pytest.importorskip("tests.support.fake_llm")


def test_step_through_optoprime_patches_the_process_and_accounts_llm_use(env):
    answer = json.dumps({"reasoning": "Shorter is better.", "answer": "",
                         "suggestion": {"prompt": "Be very brief."}})
    with fake_llm.FakeLLMServer([fake_llm.Reply(answer)]) as llm:
        # No TRACE_OPTIMIZER: the daemon's default, OptoPrime, with the SDK pointed at loopback.
        env.extra.update(OPENAI_BASE_URL=llm.openai_base_url, OPENAI_API_KEY="test-key",
                         TRACE_LLM="openai:gpt-4o-mini", TRACE_OPTIMIZER="")
        daemon = env.serve()
        try:
            client = Client(env.socket, "opto")
            out = client.run_episode(1, "Be brief.", output="A very long answer ...")
            client.send(m.Feedback(episode=1, node=out, text="The answer is too long."))
            done = client.step()
            assert done.error is None, done.error
            assert done.version == 1 and done.changes[0]["new"] == "Be very brief."
            patch = client.expect(m.Patch)
            assert [(i.name, i.value) for i in patch.items] == [("prompt", "Be very brief.")]

            assert llm.request_count == 1
            step = client.request("steps", session="opto").data[0]
            assert "#Variables" in step["prompt"] and "The answer is too long." in step["prompt"]
            assert step["llm_call_count"] == 1 and step["prompt_tokens"] > 0
            llm_use = client.status()["sessions"][0]["llm"]
            assert llm_use["calls"] == 1 and llm_use["prompt_tokens"] > 0
            assert "Be brief." in llm.requests[0].prompt_text
        finally:
            stop_process(daemon)


SHOP = '''\
import tracer


class Agent:
    @tracer.bundle(trainable=True)
    def greet(self, name):
        return "Hola " + name
'''
BANK = SHOP          # the same class, method and source, in another module
MAIN = '''\
import tracer
import bank
import shop


def make():
    @tracer.bundle(trainable=True)
    def inner(text):
        return text + "!"
    return inner


tracer.session("codes")
exclaim = make()
out = exclaim(bank.Agent().greet(shop.Agent().greet("Juan")))
tracer.feedback(out, "The first greeting should be 'Buenas'.")
print(tracer.step(timeout=60))
print("after:", shop.Agent().greet("Ana"), "/", bank.Agent().greet("Ana"))
'''
NEW_GREET = "def greet(self, name):\n    return 'Buenas ' + name\n"


def rewrite_the_first_greeting(request) -> fake_llm.Reply:
    """An LLM that edits the code variable the prompt attaches to the first greet call."""
    calls = re.findall(r"^\w+ = (\w+)\(.*__code=(\w+)\)$", request.prompt_text, re.MULTILINE)
    first = next((variable for function, variable in calls if function == "greet"), None)
    if first is None:
        return fake_llm.Reply("TERMINATE")
    return fake_llm.Reply(json.dumps({"reasoning": "", "answer": "", "suggestion": {first: NEW_GREET}}))


def test_a_suggestion_for_one_of_two_identical_methods_patches_the_one_that_ran_there(env, tmp_path):
    # shop.Agent.greet and bank.Agent.greet have the same name and source;
    # only the function id tells which call ran which. The LLM edits the code
    # of the first call (shop's): only shop's method changes in the process.
    for name, text in (("shop.py", SHOP), ("bank.py", BANK), ("main.py", MAIN)):
        (tmp_path / name).write_text(text)
    with fake_llm.FakeLLMServer(responder=rewrite_the_first_greeting) as llm:
        env.extra.update(OPENAI_BASE_URL=llm.openai_base_url, OPENAI_API_KEY="test-key",
                         TRACE_LLM="openai:gpt-4o-mini", TRACE_OPTIMIZER="")
        daemon = env.serve()
        try:
            run = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=env.environ(), capture_output=True,
                                 text=True, timeout=90)
            prompt = llm.requests[0].prompt_text if llm.requests else ""
        finally:
            stop_process(daemon)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "after: Buenas Ana / Hola Ana", prompt


def test_a_nested_trainable_function_runs_its_code_variable_in_the_prompt(env, tmp_path):
    for name, text in (("shop.py", SHOP), ("bank.py", BANK), ("main.py", MAIN)):
        (tmp_path / name).write_text(text)
    with fake_llm.FakeLLMServer([fake_llm.Reply("TERMINATE")]) as llm:
        env.extra.update(OPENAI_BASE_URL=llm.openai_base_url, OPENAI_API_KEY="test-key",
                         TRACE_LLM="openai:gpt-4o-mini", TRACE_OPTIMIZER="")
        daemon = env.serve()
        try:
            run = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=env.environ(), capture_output=True,
                                 text=True, timeout=90)
            prompt = llm.requests[0].prompt_text if llm.requests else ""
        finally:
            stop_process(daemon)
    assert run.returncode == 0, run.stderr
    assert re.search(r"^inner_output = inner\(text=greet_output_2, __code=inner_code\)$", prompt, re.MULTILINE), \
        prompt
    assert "(code) inner_code:@tracer.bundle(trainable=True)\ndef inner(text):" in prompt
