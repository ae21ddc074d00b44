"""Only usable answers are cached: a retried step never replays an unreadable one."""
from __future__ import annotations

import json

from tests.support.fake_llm import Reply

MESSAGES = [{"role": "system", "content": "You are an optimizer."}, {"role": "user", "content": "#Feedback\nlarger"}]
GOOD = json.dumps({"reasoning": "", "answer": "", "suggestion": {"x": 2.0}})


def parses(text: str) -> bool:
    json.loads(text)
    return True


def test_an_answer_the_caller_cannot_use_is_not_cached(fake_llm, make_client):
    fake_llm.add_replies(Reply("this is not JSON"), Reply(GOOD))
    client = make_client()
    first = client.complete(MESSAGES, session="s", accept=parses)
    second = client.complete(MESSAGES, session="s", accept=parses)
    assert (first.response, first.cached) == ("this is not JSON", False)
    assert (second.response, second.cached) == (GOOD, False)
    assert fake_llm.request_count == 2


def test_a_usable_answer_is_cached_and_served_again(fake_llm, make_client):
    fake_llm.add_replies(Reply(GOOD))
    client = make_client()
    client.complete(MESSAGES, session="s", accept=parses)
    again = client.complete(MESSAGES, session="s", accept=parses)
    assert (again.response, again.cached) == (GOOD, True)
    assert fake_llm.request_count == 1


def test_a_cached_answer_the_caller_now_refuses_counts_as_a_miss(fake_llm, make_client):
    fake_llm.add_replies(Reply("[1, 2]"), Reply(GOOD))
    client = make_client()
    client.complete(MESSAGES, session="s")                 # cached without a check
    wants_a_dict = lambda text: isinstance(json.loads(text), dict)  # noqa: E731
    call = client.complete(MESSAGES, session="s", accept=wants_a_dict)
    assert (call.response, call.cached) == (GOOD, False)
    assert fake_llm.request_count == 2
