"""A scripted stand-in for an LLM, so the examples run with no API key.

It is the loopback server the tests use (tests/support/fake_llm.py: real
HTTP on 127.0.0.1 speaking the OpenAI and Anthropic wire formats), with a
responder that knows the examples: it answers the sales agent's own
questions, and answers OptoPrime's problem instances with the fix a good
model would propose. The answers are SCRIPTED: they show the machinery
(tracing, the daemon, the optimizer's prompt and parsing, live patching),
not a model's intelligence. Set OPENAI_API_KEY or ANTHROPIC_API_KEY to use
a real model instead.

    python examples/scripted_llm.py        # prints the base URL, serves until killed
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.fake_llm import FakeLLMServer, Reply  # noqa: E402

_VARIABLE = re.compile(r"^\((?P<type>[^)]*)\) (?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>[=:])(?P<value>.*)$")

FIXED_SOURCES = {
    "strange_sort_list": '''def strange_sort_list(lst):
    """Given a list of integers, return it in strange order.

    Strange sorting starts with the minimum value, then the maximum of the
    remaining integers, then the minimum, and so on.
    """
    rest = sorted(lst)
    result = []
    take_min = True
    while rest:
        result.append(rest.pop(0) if take_min else rest.pop())
        take_min = not take_min
    return result
''',
    "greet": '''def greet(self, lang, user_name):
    """Produce a greeting based on the language"""
    greeting = "Hola" if lang == "es" else "Hello"
    return f"{greeting}, {user_name}!"
''',
    "decide_lang": '''def decide_lang(self, response):
    """Map the language into a variable"""
    return "es" if "spanish" in response.lower() else "en"
''',
}


def variables(prompt: str) -> list[tuple[str, str, str]]:
    """(type, name, value) of each line of the last #Variables section (code: first line)."""
    section = prompt.rsplit("#Variables", 1)[-1].split("\n#", 1)[0]
    found = []
    for line in section.splitlines():
        match = _VARIABLE.match(line.strip())
        if match:
            found.append((match["type"], match["name"], match["value"]))
    return found


def suggest(prompt: str) -> dict:
    """The suggestion a good model would make for the examples' problems."""
    suggestion = {}
    for type_name, name, value in variables(prompt):
        if type_name == "code":
            function = re.match(r"\s*def (\w+)", value)
            if function and function[1] in FIXED_SOURCES:
                suggestion[name] = FIXED_SOURCES[function[1]]
        elif type_name in ("float", "int"):
            number = float(value)
            suggestion[name] = abs(number) + 1 if type_name == "float" else int(abs(number)) + 1
        elif type_name == "str" and "{name}" in value:
            suggestion[name] = "Hello {name}!"
    return suggestion


def respond(request) -> Reply:
    prompt = request.prompt_text
    if "#Variables" in prompt and "#Feedback" in prompt:
        suggestion = suggest(prompt)
        answer = {
            "reasoning": "(scripted answer) The feedback asks for a different output; "
                         "change the variables that produce it.",
            "answer": "",
            "suggestion": suggestion,
        }
        return Reply(json.dumps(answer) if suggestion else "TERMINATE")
    if "Decide the language" in prompt:
        spanish = any(word in prompt for word in ("Hola", " soy ", "quiero"))
        return Reply("Spanish" if spanish else "English")
    if "Extract name" in prompt:
        name = re.search(r"(?:I'm|soy) (\w+)", prompt)
        return Reply(name[1] if name else "friend")
    return Reply("OK")


def main() -> int:
    server = FakeLLMServer(responder=respond).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
