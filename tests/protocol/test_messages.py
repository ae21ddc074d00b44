"""Decoding validates every field and names the one at fault; unknown kinds and keys are tolerated."""
from __future__ import annotations

import msgpack
import pytest

from protocol import InvalidMessage, VersionMismatch, decode_body
from protocol import messages as m


def decode(data: dict):
    return decode_body(msgpack.packb(data))


FEEDBACK = {"kind": "feedback", "episode": 1, "node": 2, "text": "ok"}
FUNCTION = {"id": 1, "module": "app", "qualname": "f", "source": "def f(): pass", "doc": None,
            "signature": "()", "file": "app.py", "line": 1, "trainable": True}


def test_mistyped_field_is_named_with_its_kind():
    with pytest.raises(InvalidMessage, match=r"^feedback.text: expected str, got int$"):
        decode({**FEEDBACK, "text": 5})


def test_error_carries_the_path_separately():
    with pytest.raises(InvalidMessage) as caught:
        decode({**FEEDBACK, "node": "7"})
    assert caught.value.path == "feedback.node"
    assert caught.value.problem == "expected int, got str"


def test_missing_required_field_is_named():
    data = dict(FEEDBACK)
    del data["text"]
    with pytest.raises(InvalidMessage, match=r"^feedback.text: missing required field$"):
        decode(data)


def test_missing_field_with_a_default_takes_the_default():
    assert decode(FEEDBACK) == m.Feedback(episode=1, node=2, text="ok", score=None)


def test_field_inside_a_nested_record_is_named_by_its_path():
    data = {"kind": "definitions", "functions": [FUNCTION, {**FUNCTION, "line": "3"}]}
    with pytest.raises(InvalidMessage, match=r"^definitions.functions\[1\].line: expected int, got str$"):
        decode(data)


def test_nested_records_decode_to_dataclasses():
    message = decode({"kind": "definitions", "functions": [FUNCTION]})
    assert message.functions == [m.FunctionDef(**FUNCTION)]
    assert message.params == [] and message.sites == []


def test_bool_is_not_accepted_as_an_int():
    with pytest.raises(InvalidMessage, match="feedback.episode: expected int, got bool"):
        decode({**FEEDBACK, "episode": True})


def test_int_score_decodes_as_a_float():
    message = decode({**FEEDBACK, "score": 1})
    assert message.score == 1.0 and type(message.score) is float


def test_optional_field_accepts_none_and_names_its_type_otherwise():
    assert decode({**FEEDBACK, "score": None}).score is None
    with pytest.raises(InvalidMessage, match="feedback.score: expected float or None, got str"):
        decode({**FEEDBACK, "score": "high"})


def test_param_kind_must_be_one_of_the_documented_kinds():
    param = {"name": "p", "type": "str", "value": "x", "kind": "attribute"}
    with pytest.raises(InvalidMessage, match=r"definitions.params\[0\].kind: expected one of 'global'.*got 'attribute'"):
        decode({"kind": "definitions", "params": [param]})


def test_free_form_data_must_have_str_keys():
    body = msgpack.packb({"kind": "reply", "request_id": 1, "ok": True, "data": {"a": {b"raw": 1}}})
    with pytest.raises(InvalidMessage, match=r"reply.data\['a'\]: map keys must be str, got bytes"):
        decode_body(body)


def test_free_form_data_nesting_is_bounded():
    nested: list = []
    for _ in range(100):
        nested = [nested]
    with pytest.raises(InvalidMessage, match="reply.data.*nested deeper than 64 levels"):
        decode({"kind": "reply", "request_id": 1, "ok": True, "data": nested})


def test_dict_field_must_be_a_map():
    with pytest.raises(InvalidMessage, match="status_reply.status: expected map, got list"):
        decode({"kind": "status_reply", "request_id": 1, "status": []})


def test_events_must_be_arrays():
    with pytest.raises(InvalidMessage, match=r"^events.events\[1\]: expected an event array, got str$"):
        decode({"kind": "events", "episode": 1, "events": [["ret", 1, 2, 3], "ret"]})


def test_event_contents_are_left_to_validate_event():
    message = decode({"kind": "events", "episode": 1, "events": [["anything", {"x": 1}]]})
    assert message.events == [["anything", {"x": 1}]]


def test_version_must_be_two_ints():
    with pytest.raises(InvalidMessage, match=r"welcome.protocol: expected \[major, minor\]"):
        decode({"kind": "welcome", "protocol": [1], "daemon_pid": 1, "client_id": 1, "session": "", "version": 0})


def test_unknown_kind_decodes_to_unknown_with_its_fields():
    assert decode({"kind": "telemetry", "cpu": 3}) == m.Unknown("telemetry", {"cpu": 3})


def test_unknown_keys_of_a_known_kind_are_ignored():
    assert decode({**FEEDBACK, "added_in_1_1": [1, 2]}) == m.Feedback(episode=1, node=2, text="ok")


def test_missing_kind_is_named():
    with pytest.raises(InvalidMessage, match=r"^message.kind: missing required field$"):
        decode({"episode": 1})


def test_kind_must_be_a_str():
    with pytest.raises(InvalidMessage, match=r"^message.kind: expected str, got int$"):
        decode({"kind": 3})


def test_hello_of_another_major_version_that_does_not_fit_raises_version_mismatch():
    with pytest.raises(VersionMismatch, match="daemon speaks protocol 1.1, this tracer 2.0"):
        decode({"kind": "hello", "protocol": [2, 0], "identity": {"pid": 1}})


def test_welcome_of_another_major_version_that_does_not_fit_raises_version_mismatch():
    with pytest.raises(VersionMismatch, match="daemon speaks protocol 3.1, this tracer 1.1"):
        decode({"kind": "welcome", "protocol": [3, 1]})


def test_hello_of_the_same_major_with_a_bad_field_is_an_invalid_message():
    with pytest.raises(InvalidMessage, match="hello.pid"):
        decode({"kind": "hello", "protocol": [1, 0], "python": "3.12", "pid": "x", "argv": [], "session": ""})


def test_unknown_message_cannot_reuse_a_known_kind():
    from protocol import UnencodableValue, encode_message
    with pytest.raises(UnencodableValue, match="unknown.kind"):
        encode_message(m.Unknown("feedback", {}))
