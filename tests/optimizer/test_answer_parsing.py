"""Reading OptoPrime answers however the LLM formats them."""
from __future__ import annotations

import pytest

from optimizer_service.optoprime.answer import AnswerUnreadable, parse_answer

EXPECTED = {"x": 60.0}


def test_plain_json():
    parsed = parse_answer('{"reasoning": "r", "answer": "", "suggestion": {"x": 60.0}}')
    assert (parsed.reasoning, parsed.suggestion, parsed.terminate) == ("r", EXPECTED, False)


def test_json_in_a_fenced_block():
    text = 'Here you go:\n```json\n{"reasoning": "r", "suggestion": {"x": 60.0}}\n```\nGood luck.'
    assert parse_answer(text).suggestion == EXPECTED


def test_json_with_surrounding_prose():
    text = 'I think x must grow. {"reasoning": "bigger", "suggestion": {"x": 60.0}} That should work!'
    assert parse_answer(text).suggestion == EXPECTED


def test_single_quotes_and_trailing_commas():
    text = "{'reasoning': 'bigger', 'answer': '', 'suggestion': {'x': 60.0,},}"
    assert parse_answer(text).suggestion == EXPECTED


def test_python_literals_and_json_literals_mixed():
    text = "{'reasoning': None, 'suggestion': {'flag': true, 'other': False, 'gone': null}}"
    assert parse_answer(text).suggestion == {"flag": True, "other": False, "gone": None}


def test_raw_newlines_inside_a_code_string():
    text = '{"reasoning": "fix", "suggestion": {"f_code": "def f(x):\n    return x + 1\n"}}'
    assert parse_answer(text).suggestion == {"f_code": "def f(x):\n    return x + 1\n"}


def test_optoprimes_own_example_response_is_readable():
    # opto's example response mixes quote styles and has a stray comma form.
    text = """{"reasoning": 'In this case, change a to 14.',
     "answer": {},
     "suggestion": {"a": 10}
    }"""
    assert parse_answer(text).suggestion == {"a": 10}


def test_terminate_alone():
    parsed = parse_answer("TERMINATE")
    assert parsed.terminate and parsed.suggestion == {}


def test_terminate_inside_json_answer():
    parsed = parse_answer('{"reasoning": "all good", "answer": "TERMINATE", "suggestion": {}}')
    assert parsed.terminate


def test_empty_suggestion_without_terminate_is_no_change_not_termination():
    parsed = parse_answer('{"reasoning": "not sure", "answer": "", "suggestion": {}}')
    assert (parsed.terminate, parsed.suggestion) == (False, {})


def test_suggestion_in_a_json_object_wins_over_the_word_terminate_in_reasoning():
    parsed = parse_answer('{"reasoning": "no need to TERMINATE yet", "suggestion": {"x": 1}}')
    assert (parsed.terminate, parsed.suggestion) == (False, {"x": 1})


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("I would increase x a lot.", "no JSON object found|invalid JSON"),
    ('{"reasoning": "r", "suggestion": ["x", 1]}', "must be an object"),
])
def test_unreadable_answers_raise_with_a_reason(text, reason):
    with pytest.raises(AnswerUnreadable, match=reason):
        parse_answer(text)


def test_keys_are_case_insensitive():
    assert parse_answer('{"Reasoning": "r", "Suggestion": {"x": 60.0}}').suggestion == EXPECTED
