"""The loopback fake LLM server itself: script files, the CLI, exhaustion, broken responders."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import openai
import pytest

from tests.support.fake_llm import FakeLLMServer, Reply, load_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_prints_its_base_url_and_serves_the_script(tmp_path):
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(["first answer", {"status": 429, "retry_after": 0.01}, {"text": "third"}]))
    process = subprocess.Popen([sys.executable, "-m", "tests.support.fake_llm", "--port", "0", "--script", str(script)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "first answer"
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_script_with_an_unknown_field_is_rejected_naming_it(tmp_path):
    script = tmp_path / "bad.json"
    script.write_text(json.dumps([{"txt": "typo"}]))
    with pytest.raises(ValueError, match=r"unknown reply field\(s\) \['txt'\]"):
        load_script(str(script))


def test_requests_beyond_the_script_get_an_http_error_and_are_counted():
    with FakeLLMServer([Reply("only")]) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
        with pytest.raises(openai.InternalServerError, match="script exhausted"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}])
        assert server.exhausted == 1 and server.request_count == 2


def test_a_failing_responder_shows_up_as_an_http_error():
    def responder(request):
        raise KeyError("no rule for this prompt")

    with FakeLLMServer(responder=responder) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="responder failed: KeyError"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])


def test_responder_answers_from_the_prompt():
    with FakeLLMServer(responder=lambda request: Reply(request.prompt_text.upper())) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "shout"}])
        assert reply.choices[0].message.content == "SHOUT"
