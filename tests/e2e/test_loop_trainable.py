"""Closing the loop on code: a function of an unmodified module, marked trainable on the command line,
is rewritten by the optimizer and swapped into the running process; the file on disk is untouched."""
from __future__ import annotations

import pytest

from tests.e2e.helpers import optoprime_variables, suggest_by_function, write_files

PRICING = '''\
def total(prices):
    """Sum the prices and add 10% tax."""
    return sum(prices)
'''

FIXED_TOTAL = '''\
def total(prices):
    """Sum the prices and add 10% tax."""
    return round(sum(prices) * 1.1, 2)
'''

# The driver knows about the tracer; the module it imports does not.
DRIVER = '''\
import tracer
import pricing

out = pricing.total([10, 20])
print("before", out, flush=True)
tracer.feedback(out, "The total must include 10% tax: expected 33.0.")
print("step", tracer.step(timeout=60).version, flush=True)
print("after", pricing.total([10, 20]), pricing.total([100]), flush=True)
'''


def test_function_marked_trainable_on_the_command_line_is_fixed_live_and_its_file_untouched(loop, project):
    write_files(project, {"pricing.py": PRICING, "driver.py": DRIVER})
    source = project / "pricing.py"
    before_bytes, before_mtime = source.read_bytes(), source.stat().st_mtime_ns
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})

    run = loop.trace_run(["--session", "pricing", "--trainable", "pricing:total", "driver.py"], project)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["before 30", "step 1", "after 33.0 110.0"], run.stderr
    assert source.read_bytes() == before_bytes
    assert source.stat().st_mtime_ns == before_mtime


def test_the_optimizer_sees_the_trainable_function_source_and_the_feedback(loop, project):
    write_files(project, {"pricing.py": PRICING, "driver.py": DRIVER})
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})

    run = loop.trace_run(["--session", "pricing", "--trainable", "pricing:total", "driver.py"], project)

    assert run.returncode == 0, run.stderr
    [problem] = loop.optoprime_requests()
    code_variables = [(name, value) for type_name, name, value in optoprime_variables(problem.prompt_text)
                      if type_name == "code"]
    assert [value for _, value in code_variables] == ["def total(prices):"]
    assert "(list) prices=[10, 20]" in problem.prompt_text
    assert "The total must include 10% tax: expected 33.0." in problem.prompt_text.rsplit("#Feedback", 1)[1]



# References taken before the step: an imported name, a callback table, a bound default.
HOLDS_REFERENCES = '''\
import tracer
from pricing import total

callbacks = {"total": total}


def checkout(prices, compute=total):
    return compute(prices)


out = total([10, 20])
tracer.feedback(out, "The total must include 10% tax: expected 33.0.")
tracer.step(timeout=60)
print(total([10, 20]), callbacks["total"]([10, 20]), checkout([10, 20]))
'''


def test_every_reference_to_the_function_taken_before_the_step_runs_the_new_code(loop, project):
    write_files(project, {"pricing.py": PRICING, "driver.py": HOLDS_REFERENCES})
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})

    run = loop.trace_run(["--session", "pricing", "--trainable", "pricing:total", "driver.py"], project)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["33.0 33.0 33.0"]


# Joins the session after the step: the new body arrives before pricing is imported.
LATECOMER = '''\
import time
import pricing

# The new body is swapped in once the function exists (on the tracer's thread, within a flush).
deadline = time.monotonic() + 10
while pricing.total([10, 20]) != 33.0 and time.monotonic() < deadline:
    time.sleep(0.02)
print("late", pricing.total([10, 20]))
'''


def test_a_process_that_joins_after_the_step_runs_the_learned_code(loop, project):
    write_files(project, {"pricing.py": PRICING, "driver.py": DRIVER, "late.py": LATECOMER})
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})
    marking = ["--session", "pricing", "--trainable", "pricing:total"]
    learner = loop.trace_run([*marking, "driver.py"], project)
    assert learner.returncode == 0, learner.stderr

    late = loop.trace_run([*marking, "late.py"], project)

    assert late.returncode == 0, late.stderr
    assert late.stdout.splitlines() == ["late 33.0"]


def test_a_process_that_joins_after_the_step_runs_the_learned_code_from_its_first_call(loop, project):
    write_files(project, {"pricing.py": PRICING, "driver.py": DRIVER,
                          "first_call.py": "import pricing\nprint('late', pricing.total([10, 20]))\n"})
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})
    marking = ["--session", "pricing", "--trainable", "pricing:total"]
    learner = loop.trace_run([*marking, "driver.py"], project)
    assert learner.returncode == 0, learner.stderr

    late = loop.trace_run([*marking, "first_call.py"], project)

    assert late.returncode == 0, late.stderr
    assert late.stdout.splitlines() == ["late 33.0"]


# A script whose own function is trainable: `main.py learn` optimises it, `main.py` runs it again.
SCRIPT_WITH_ITS_OWN_FUNCTION = '''\
import sys
import tracer


def total(prices):
    """Sum the prices and add 10% tax."""
    return sum(prices)


out = total([10, 20])
print("first call", out, flush=True)
if sys.argv[1:] == ["learn"]:
    tracer.feedback(out, "The total must include 10% tax: expected 33.0.")
    print("step", tracer.step(timeout=60).version, flush=True)
'''


def test_running_a_script_again_in_its_session_gets_its_learned_code_while_it_runs(loop, project):
    write_files(project, {"main.py": SCRIPT_WITH_ITS_OWN_FUNCTION.replace(
        'out = total([10, 20])\n',
        'import time\ndeadline = time.monotonic() + 10\n'
        'while sys.argv[1:] != ["learn"] and total([10, 20]) == 30 and time.monotonic() < deadline:\n'
        '    time.sleep(0.02)\n'
        'out = total([10, 20])\n')})
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})
    marking = ["--session", "own", "--trainable", "__main__:total"]
    learner = loop.trace_run([*marking, "main.py", "learn"], project)
    assert learner.stdout.splitlines() == ["first call 30", "step 1"], learner.stderr

    again = loop.trace_run([*marking, "main.py"], project)

    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["first call 33.0"]


def test_running_a_script_again_in_its_session_starts_from_its_learned_code(loop, project):
    write_files(project, {"main.py": SCRIPT_WITH_ITS_OWN_FUNCTION})
    loop.answer = suggest_by_function({"total": FIXED_TOTAL})
    marking = ["--session", "own", "--trainable", "__main__:total"]
    learner = loop.trace_run([*marking, "main.py", "learn"], project)
    assert learner.stdout.splitlines() == ["first call 30", "step 1"], learner.stderr

    again = loop.trace_run([*marking, "main.py"], project)

    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["first call 33.0"]
