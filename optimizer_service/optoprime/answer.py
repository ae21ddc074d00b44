"""Reading the LLM's answer: OptoPrime's JSON, however it arrives.

Accepted, in this order: plain JSON; JSON in a fenced ``` block; a JSON
object inside surrounding prose; near-JSON (single quotes, trailing commas,
Python's True/False/None, raw newlines inside strings). An answer that is
none of these but says TERMINATE terminates, as in OptoPrime. Anything else
raises `AnswerUnreadable` with a reason the optimizer sends back to the LLM.
"""
from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n(.*?)```", re.DOTALL)
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}
_MAX_OBJECT_STARTS = 20     # candidate "{" positions tried inside prose


class AnswerUnreadable(ValueError):
    """The answer holds no readable JSON object with the expected keys."""


@dataclass
class ParsedAnswer:
    reasoning: str = ""
    answer: str = ""
    suggestion: dict[str, Any] = field(default_factory=dict)
    terminate: bool = False


def parse_answer(text: str) -> ParsedAnswer:
    """The reasoning, answer and suggestion in `text`; see the module docstring."""
    if not isinstance(text, str) or not text.strip():
        raise AnswerUnreadable("the response is empty")
    obj, error = _find_object(text)
    if obj is None:
        if "TERMINATE" in text:
            return ParsedAnswer(terminate=True)
        raise AnswerUnreadable(error)
    keys = {str(k).lower(): v for k, v in obj.items()}
    suggestion = keys.get("suggestion")
    if suggestion in (None, "", [], "TERMINATE"):
        suggestion = {}
    if not isinstance(suggestion, dict):
        raise AnswerUnreadable(f'"suggestion" must be an object mapping variable names to values, '
                               f"got {type(suggestion).__name__}")
    answer = keys.get("answer")
    answer_text = "" if answer is None else answer if isinstance(answer, str) else json.dumps(answer, default=str)
    reasoning = keys.get("reasoning")
    reasoning_text = "" if reasoning is None else str(reasoning)
    terminate = not suggestion and ("TERMINATE" in answer_text or reasoning_text.strip() == "TERMINATE"
                                    or "TERMINATE" in text and "suggestion" not in keys)
    return ParsedAnswer(reasoning_text, answer_text, {str(k): v for k, v in suggestion.items()}, terminate)


def _find_object(text: str) -> tuple[dict | None, str]:
    """The first dict found by the strategies above, or (None, why not)."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    first_error = ""
    for candidate in candidates:
        obj, error = _load(candidate)
        if isinstance(obj, dict):
            return obj, ""
        first_error = first_error or error
    # JSON embedded in prose: decode from each "{" (the decoder stops at the
    # object's end, so trailing prose does not matter).
    decoder = json.JSONDecoder(strict=False)
    starts = [i for i, ch in enumerate(text) if ch == "{"][:_MAX_OBJECT_STARTS]
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj, ""
    for start in starts:
        end = _matching_brace(text, start)
        if end is not None:
            obj, _ = _load(text[start:end + 1])
            if isinstance(obj, dict):
                return obj, ""
    if not starts:
        return None, 'no JSON object found (expected {"reasoning": ..., "answer": ..., "suggestion": {...}})'
    return None, first_error or "no JSON object found"


def _load(candidate: str) -> tuple[Any, str]:
    try:
        return json.loads(candidate, strict=False), ""
    except ValueError as exc:
        json_error = f"invalid JSON: {exc}"
    try:
        return ast.literal_eval(_pythonize(candidate)), ""
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, tokenize.TokenError):
        return None, json_error


def _pythonize(candidate: str) -> str:
    """Near-JSON to a Python literal: true/false/null outside strings become True/False/None."""
    tokens = []
    for token in tokenize.generate_tokens(io.StringIO(candidate).readline):
        if token.type == tokenize.NAME and token.string in _JSON_WORDS:
            token = token._replace(string=_JSON_WORDS[token.string])
        tokens.append(token)
    return tokenize.untokenize(tokens)


def _matching_brace(text: str, start: int) -> int | None:
    """Index of the "}" closing the "{" at `start`, skipping quoted strings."""
    depth = 0
    quote = ""
    escaped = False
    for index in range(start, len(text)):
        ch = text[index]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return index
    return None
