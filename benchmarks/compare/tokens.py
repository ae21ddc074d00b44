"""Prompt size in tokens, counted the same way for both systems.

No tokenizer files can be downloaded here (tiktoken fetches its BPE ranks
from the network), so tokens are counted with the GPT-2/cl100k
pre-tokenizer split: contractions, runs of letters, runs of digits, runs
of other symbols, whitespace. BPE never merges across these pieces, so the
count is a lower bound of a real tokenizer's (typically 80-95% of it on
English and code); it is the same rule for both prompts, which is what a
comparison needs.
"""
from __future__ import annotations

import re

_PIECES = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+""")


def count_tokens(text: str) -> int:
    """Number of pre-tokenizer pieces in `text` (a lower bound of its BPE token count)."""
    return sum(1 for _ in _PIECES.finditer(text))
