"""Names in the problem instance: valid identifiers, unique, and meaningful.

OptoPrime names values after their type (`float0`, `str3`); we name them
after what they are: the parameter (`instruct1`), the argument they were
passed as (`user_query`), the function that produced them (`bar_output`).
A name that is taken gets the next free `_2`, `_3`, ... suffix.
"""
from __future__ import annotations

import keyword
import re
from functools import lru_cache

_NON_IDENT = re.compile(r"\W+")


def identifier(text: str, fallback: str = "value") -> str:
    """`text` turned into a valid Python identifier (never a keyword), or `fallback`."""
    return _identifier(str(text), str(fallback))


@lru_cache(maxsize=65536)
def _identifier(text: str, fallback: str) -> str:
    # Cached: a long trace names thousands of values after the same few bases.
    name = _NON_IDENT.sub("_", text)
    if not name.strip("_"):
        return fallback
    if name != text:
        name = name.strip("_")   # "pkg.mod:x" -> "pkg_mod_x", but "__call__" stays as it is
    if name[0].isdigit():
        name = f"{fallback}_{name}"
    if keyword.iskeyword(name):
        name += "_"
    return name


def output_base(function_name: str) -> str:
    """What a function's results are named after: `bar` -> "bar", `__call__` -> "call"."""
    return identifier(function_name.strip("_") or function_name, "call")


def short_name(qualified: str) -> str:
    """The last component of "module:Class.method" or "pkg.mod.name"."""
    tail = str(qualified).rsplit(":", 1)[-1]
    tail = tail.replace(".<locals>.", ".")
    return tail.rsplit(".", 1)[-1] or tail


class NameTable:
    """Allocates unique identifiers; linear in the number of names handed out."""

    def __init__(self, reserved: set[str] | None = None) -> None:
        self._taken: set[str] = set(reserved or ())
        self._next_suffix: dict[str, int] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._taken

    def allocate(self, base: str) -> str:
        """`base` if free, else `base_2`, `base_3`, ... (the first one free)."""
        base = identifier(base)
        if base not in self._taken:
            self._taken.add(base)
            return base
        suffix = self._next_suffix.get(base, 2)
        while f"{base}_{suffix}" in self._taken:
            suffix += 1
        self._next_suffix[base] = suffix + 1
        name = f"{base}_{suffix}"
        self._taken.add(name)
        return name

    def allocate_first_free(self, candidates: list[str]) -> str:
        """The first candidate that is free, else a suffixed form of the first."""
        for candidate in candidates:
            name = identifier(candidate)
            if name not in self._taken:
                self._taken.add(name)
                return name
        return self.allocate(candidates[0])
