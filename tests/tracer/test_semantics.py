"""Semantic preservation: every corpus program prints exactly the same instrumented.

Each program in tests/tracer/programs/ runs in a fresh interpreter twice,
through the same runner: once untouched, once with every function in it
instrumented (in call mode, then in op mode). stdout, stderr and the exit
code must be identical byte for byte, the hooks must not have swallowed an
internal error, and the resolver must turn every record into events.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS_DIR = Path(__file__).parent / "programs"
RUNNER = PROGRAMS_DIR / "run_instrumented.py"
PROGRAMS = sorted(p.name for p in PROGRAMS_DIR.glob("*.py") if p.name != RUNNER.name)
REPO = Path(__file__).resolve().parents[2]


def run_program(mode: str, program: str, tmp_path: Path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONHASHSEED"] = "0"
    env.pop("TRACE_GRANULARITY", None)
    stats = tmp_path / f"stats-{mode}.json"
    env["CORPUS_STATS"] = str(stats)
    proc = subprocess.run(
        [sys.executable, str(RUNNER), mode, program], cwd=PROGRAMS_DIR, env=env,
        capture_output=True, timeout=120,
    )
    data = json.loads(stats.read_text()) if stats.exists() else None
    return proc, data


def required_version(program: str) -> tuple:
    """A program whose first line is `# requires: 3.11` only parses from that version on."""
    first = (PROGRAMS_DIR / program).read_text().splitlines()[0]
    if first.startswith("# requires:"):
        return tuple(int(p) for p in first.split(":", 1)[1].strip().split("."))
    return (3, 10)


@pytest.mark.parametrize("granularity", ["call", "op"])
@pytest.mark.parametrize("program", PROGRAMS)
def test_program_output_is_identical_when_every_function_is_instrumented(program, granularity, tmp_path):
    if sys.version_info < required_version(program):
        pytest.skip(f"{program} needs Python {'.'.join(map(str, required_version(program)))}")
    plain, _ = run_program("none", program, tmp_path)
    traced, stats = run_program(granularity, program, tmp_path)
    assert plain.returncode == 0, plain.stderr.decode()
    assert traced.stdout == plain.stdout
    assert traced.stderr == plain.stderr
    assert traced.returncode == plain.returncode
    assert stats is not None, "the instrumented run wrote no statistics"
    assert stats["hook_errors"] == 0
    assert stats["resolver_error"] is None
    assert stats["resolver_errors"] == 0, "records the resolver could not convert"
    assert stats["tags"].get("call", 0) > 0, "nothing was traced"


def _sample_functions():
    def loops(x):
        y = x + 1
        for i in range(2):
            y += i
        try:
            if y > 100:
                raise ValueError
        except ValueError:
            pass
        return y

    def gen(n):
        for i in range(n):
            yield i * 2

    def raises(x):
        z = x * 2
        raise KeyError(z)

    return [(loops, (1,)), (gen, (2,)), (raises, (3,))]


def _settrace_events(fn, args):
    names = {"loops", "gen", "raises"}
    seen = []

    def tracer(frame, event, arg):
        if frame.f_code.co_name in names:
            seen.append((frame.f_code.co_name, event, frame.f_lineno - frame.f_code.co_firstlineno))
        return tracer

    sys.settrace(tracer)
    try:
        result = fn(*args)
        if hasattr(result, "__next__"):
            result = list(result)
    except Exception as exc:
        result = repr(exc)
    finally:
        sys.settrace(None)
    return result, seen


@pytest.mark.parametrize("granularity", ["call", "op"])
def test_a_sys_settrace_tracer_sees_the_same_line_call_and_exception_events(granularity):
    from tracer import marking

    for (plain, args), (traced, _) in zip(_sample_functions(), _sample_functions()):
        marking.instrument_function(traced, granularity=granularity)
        assert _settrace_events(traced, args) == _settrace_events(plain, args)
