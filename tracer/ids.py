"""Stable integer ids for marked functions and operation sites.

Rewritten code is cached on disk and shared by every process, so ids baked
into it as constants must not depend on import order or on the interpreter
version (3.12 inlines comprehensions, so instruction indices differ). They
are derived from the module, qualname and source position only.
"""
from __future__ import annotations

import hashlib


def _stable_hash(text: str) -> int:
    # 62 bits: fits msgpack's int64 and stays a small-ish Python int.
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def function_id(module: str, qualname: str) -> int:
    """Id of the function `module:qualname`."""
    return _stable_hash(f"f|{module}|{qualname}")


def site_id(module: str, qualname: str, op: str, line: int, col: int, occurrence: int = 0) -> int:
    """Id of one traced operation inside a marked function.

    `occurrence` separates operations of the same kind at the same position
    (e.g. the implicit compare and call that one expression compiles to).
    """
    return _stable_hash(f"s|{module}|{qualname}|{op}|{line}|{col}|{occurrence}")
