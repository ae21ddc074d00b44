"""The instant LLM both systems talk to: the project's loopback server, answering from the prompt.

Both optimizers send their real requests, through the real `openai` SDK,
to one `tests.support.fake_llm.FakeLLMServer` on 127.0.0.1. The answer is
made from the prompt itself (OptoPrime's `#Variables` section), so it names
each system's own parameter and proposes a value of the right type: the step
succeeds on both sides and the server adds no measurable time. Every request
is recorded, which is how the prompt-size figure sees exactly what each
system sent.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Any

from tests.support.fake_llm import FakeLLMServer, RecordedRequest, Reply

# OptoPrime's value lines: "(str) greeting0=Hello", "(code) __code0:def f(...)".
_VARIABLE_LINE = re.compile(r"^\((?P<type>[A-Za-z_][\w.]*)\)\s+(?P<name>[^\s=:]+)\s*[=:](?P<value>.*)$")
_SECTION = re.compile(r"^#(Variables|Constraints)\s*$", re.MULTILINE)


def variables_in_prompt(prompt: str) -> dict[str, tuple[str, str]]:
    """The `#Variables` section of an OptoPrime prompt: name -> (type, value text).

    Takes the last `#Variables` section (the system prompt describes the
    format in prose first).
    """
    found: dict[str, tuple[str, str]] = {}
    matches = list(_SECTION.finditer(prompt))
    starts = [m for m in matches if m.group(1) == "Variables"]
    if not starts:
        return found
    section_start = starts[-1].end()
    following = [m.start() for m in matches if m.start() > section_start]
    section = prompt[section_start:following[0] if following else len(prompt)]
    for line in section.splitlines():
        match = _VARIABLE_LINE.match(line.strip())
        if match:
            found[match["name"]] = (match["type"], match["value"].strip())
    return found


def current_value(text: str) -> Any:
    """The value a prompt line shows: a Python literal (ours quotes strings) or bare text (opto does not)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def new_value(type_name: str, text: str) -> Any:
    """A different value of the same type (what a useful suggestion looks like)."""
    value = current_value(text)
    if type_name == "bool":
        return not value if isinstance(value, bool) else True
    if type_name == "int":
        return value + 1 if isinstance(value, int) else 1
    if type_name == "float":
        return value + 0.5 if isinstance(value, (int, float)) else 1.0
    return "Hi there" if value != "Hi there" else "Hello"


def answer(request: RecordedRequest) -> Reply:
    """OptoPrime's JSON answer suggesting a new value for every variable."""
    variables = variables_in_prompt(request.prompt_text)
    suggestion = {name: new_value(type_name, value)
                  for name, (type_name, value) in variables.items() if type_name != "code"}
    return Reply(text=json.dumps({"reasoning": "Benchmark loopback answer.", "answer": "",
                                  "suggestion": suggestion}))


def start_server() -> FakeLLMServer:
    """A started loopback LLM that answers every request instantly."""
    # fake_llm turns Nagle's algorithm off, so answers are not held ~40 ms.
    return FakeLLMServer(responder=answer).start()
