"""Per-thread record buffers: the only thing the hot path writes to.

Each thread that runs marked code owns one plain list. Hooks append one
tuple to it and return; the flusher thread takes records out with
`drain()`. Nothing here serialises, summarises or locks on the hot path:
`list.append` and the `n = len(lst); chunk = lst[:n]; del lst[:n]` idiom
are atomic under the GIL, so an append racing with a drain is either in the
chunk or stays for the next drain, never lost.

A buffer is bounded. When a hook finds its buffer longer than `limit()`, it
calls the overflow handler the runtime registered with
`set_overflow_handler(fn)`; the default drops the buffered records and
counts them (`take_dropped()` reports and resets the count).

Tracing is suppressed per thread by replacing the thread's buffer with
`None` (see `suppressed()`): hooks treat a `None` buffer as "do not trace",
which costs them nothing extra. The buffer lives in a per-thread state list
(`thread_state()`), which the hooks also use for the current call.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Callable, Iterator, Optional

DEFAULT_LIMIT = 200_000

_tls = threading.local()
_registry_lock = threading.Lock()
# (thread ident, buffer, weak reference to the owning thread). A list and not
# a dict keyed by ident: idents are reused after a thread ends, and the
# records of the dead thread must still be drained.
_registry: list[tuple[int, list, "weakref.ref[threading.Thread]"]] = []
_limit = DEFAULT_LIMIT
_dropped = 0
_dropped_lock = threading.Lock()


def _drop_and_count(buffer: list) -> None:
    """Default overflow handler: forget what is buffered and count it."""
    global _dropped
    n = len(buffer)
    del buffer[:n]
    with _dropped_lock:
        _dropped += n


_overflow: Callable[[list], None] = _drop_and_count


def thread_state() -> list:
    """The calling thread's state: `[buffer or None (suppressed), current call token]`.

    The hooks keep the token of the innermost running marked call in slot 1
    (see `tracer.hooks`); one thread-local lookup gives them both.
    """
    try:
        return _tls.state
    except AttributeError:
        return _new_thread_state()


def thread_buffer() -> Optional[list]:
    """The calling thread's buffer, or None while tracing is suppressed in it."""
    return thread_state()[0]


def _new_thread_state() -> list:
    buf: list = []
    thread = threading.current_thread()
    with _registry_lock:
        _registry.append((threading.get_ident(), buf, weakref.ref(thread)))
    state = [buf, None]
    _tls.state = state
    return state


def drain() -> list[tuple[int, list]]:
    """Take every buffered record out: a list of (thread ident, records).

    Records appended while this runs are either returned or left for the
    next call, never lost. Buffers of threads that have ended are dropped
    from the registry once they are empty.
    """
    out = []
    with _registry_lock:
        entries = list(_registry)
    dead = []
    for entry in entries:
        ident, buf, thread_ref = entry
        n = len(buf)
        if n:
            chunk = buf[:n]
            del buf[:n]
            out.append((ident, chunk))
        thread = thread_ref()
        if (thread is None or not thread.is_alive()) and not buf:
            dead.append(entry)
    if dead:
        with _registry_lock:
            for entry in dead:
                try:
                    _registry.remove(entry)
                except ValueError:
                    pass
    return out


def pending() -> int:
    """Number of records currently buffered over all threads."""
    with _registry_lock:
        return sum(len(buf) for _, buf, _ in _registry)


def limit() -> int:
    """Records one thread may buffer before the overflow handler is called."""
    return _limit


def set_limit(n: int) -> None:
    """Change the per-thread bound (a positive number of records)."""
    global _limit
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"buffer limit must be a positive int, got {n!r}")
    _limit = n


def set_overflow_handler(fn: Optional[Callable[[list], None]]) -> None:
    """Register `fn(buffer)`, called on the program's thread when its buffer is full.

    It may block briefly (back-pressure, e.g. wake the flusher and wait) or
    remove records and count them through `count_dropped`. It must not
    raise; if it does, the records are dropped and counted. `None` restores
    the default (drop and count).
    """
    global _overflow
    _overflow = fn if fn is not None else _drop_and_count


def overflow(buffer: list) -> None:
    """Called by hooks when `buffer` is over the limit. Never raises."""
    try:
        _overflow(buffer)
    except Exception:
        _drop_and_count(buffer)
    if len(buffer) > _limit:
        # The handler did not make room: drop rather than grow without bound.
        _drop_and_count(buffer)


def count_dropped(n: int) -> None:
    """Add `n` to the number of records dropped (for custom overflow handlers)."""
    global _dropped
    with _dropped_lock:
        _dropped += n


def take_dropped() -> int:
    """Number of records dropped since the last call (and reset it to 0)."""
    global _dropped
    with _dropped_lock:
        n, _dropped = _dropped, 0
    return n


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Within this block, nothing the current thread runs is traced."""
    state = thread_state()
    previous = state[0]
    state[0] = None
    try:
        yield
    finally:
        state[0] = previous


def suppress_current_thread() -> None:
    """Never trace the calling thread again (for the flusher and runtime threads)."""
    thread_state()[0] = None  # registered first, so records already buffered still drain


def is_suppressed() -> bool:
    """True while tracing is suppressed in the calling thread."""
    return thread_buffer() is None
