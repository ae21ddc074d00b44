"""The real daemon with its default optimizer (OptoPrime) and an LLM on loopback."""
from __future__ import annotations

import json

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
