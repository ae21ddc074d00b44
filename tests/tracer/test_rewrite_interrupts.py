"""A KeyboardInterrupt raised inside any hook (as a SIGINT handler may) stops the program cleanly.

The hooks let KeyboardInterrupt through, so every hook call site in the
rewritten code must be a place where an exception can propagate: the
frame's token and the exception state must be where CPython's unwinding
expects them. Each run interrupts the N-th hook that writes a record, for
every N until the program completes, in a fresh interpreter (a mistake here
is a crash, not a failed assert).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent("""
    import asyncio, sys
    from tracer import buffers, marking

    marking.set_granularity(sys.argv[1])
    stop_at = int(sys.argv[2])
    seen = [0]

    def interrupt_nth(buf):
        seen[0] += 1
        del buf[:]
        if seen[0] == stop_at:
            raise KeyboardInterrupt

    @marking.bundle()
    def leaf(x):
        if x == 3:
            raise ValueError(x)
        return x + 1

    @marking.bundle()
    def gen(n):
        for i in range(n):
            try:
                yield leaf(i)
            except ValueError:
                yield -1

    @marking.bundle()
    async def coro(n):
        await asyncio.sleep(0)
        return [v async for v in agen(n)]

    @marking.bundle()
    async def agen(n):
        for i in range(n):
            yield i

    @marking.bundle()
    def main():
        total = 0
        for v in gen(5):
            total += v
        s = ""
        for i in range(3):
            s += str(i)
        try:
            leaf(3)
        except ValueError:
            total -= 1
        return total, s, asyncio.run(coro(2))

    buffers.set_limit(1)
    buffers.set_overflow_handler(interrupt_nth)
    try:
        print("done", main())
    except KeyboardInterrupt:
        print("interrupted")
""")


@pytest.mark.parametrize("granularity", ["call", "op"])
def test_interrupt_inside_any_hook_propagates_and_never_crashes(granularity, tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(PROGRAM)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    outcomes = []
    for n in range(1, 200):
        proc = subprocess.run([sys.executable, str(script), granularity, str(n)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"interrupting hook #{n} crashed: {proc.returncode}\\n{proc.stderr[-2000:]}"
        outcomes.append(proc.stdout.split()[0])
        if outcomes[-1] == "done":
            break
    assert outcomes[-1] == "done", "the program never completed"
    assert set(outcomes[:-1]) == {"interrupted"} and len(outcomes) > 5
