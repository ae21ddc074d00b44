"""Closing the loop when the optimizer gets it wrong: its new code raises in the running process, the
exception itself is the feedback, and a rollback (from the command line or from code) brings the old
behaviour back in the running process."""
from __future__ import annotations

import pytest

from tests.e2e.helpers import TRACE_RUN, is_optoprime_prompt, optoprime_answer, optoprime_variables, write_files

CALC = '''\
def parse_price(text):
    """Parse a price written like '12,50 EUR' into a number of euros."""
    return float(text.split()[0].replace(",", ""))
'''

# The optimizer's first idea forgets the currency suffix: float() raises ValueError on it.
RAISING = '''\
def parse_price(text):
    """Parse a price written like '12,50 EUR' into a number of euros."""
    return float(text.replace(",", "."))
'''

FIXED = '''\
def parse_price(text):
    """Parse a price written like '12,50 EUR' into a number of euros."""
    return float(text.split()[0].replace(",", "."))
'''

# `driver.py MODE`: once the raising version is live and its exception was fed back, MODE "step"
# asks for another step, "cli" waits for the test to run `trace-daemon rollback`, "api" calls
# tracer.rollback().
DRIVER = '''\
import sys, time
import tracer
import calc

mode = sys.argv[1]
out = calc.parse_price("12,50 EUR")
print("original", out, flush=True)
tracer.feedback(out, "12,50 EUR is twelve euros fifty: expected 12.5.")
print("step", tracer.step(timeout=60).version, flush=True)
try:
    calc.parse_price("12,50 EUR")
except ValueError as exc:
    print("raised", type(exc).__name__, flush=True)
    tracer.feedback(exc, "parse_price raised on '12,50 EUR'; it must accept the currency suffix.")
    print("feedback on the exception accepted", flush=True)
if mode == "step":
    print("step", tracer.step(timeout=60).version, flush=True)
elif mode == "api":
    print("rollback", tracer.rollback().version, flush=True)
elif mode == "cli":
    print("waiting for rollback", flush=True)
    sys.stdin.readline()
    # The rollback patch arrives on the tracer's own thread while this one runs on.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            calc.parse_price("12,50 EUR")
            break
        except ValueError:
            time.sleep(0.02)
print("now", calc.parse_price("12,50 EUR"), flush=True)
'''

MARKING = ["--session", "calc", "--trainable", "calc:parse_price"]


class RaisingThenFixed:
    """The scripted LLM: suggests RAISING at the first OptoPrime prompt, FIXED after that."""

    def __init__(self):
        self.prompts: list[str] = []

    def __call__(self, request):
        if not is_optoprime_prompt(request):
            return optoprime_answer({})
        self.prompts.append(request.prompt_text)
        source = RAISING if len(self.prompts) == 1 else FIXED
        names = [name for type_name, name, _ in optoprime_variables(request.prompt_text) if type_name == "code"]
        return optoprime_answer({name: source for name in names})


@pytest.fixture
def calc(loop, project):
    loop.answer = RaisingThenFixed()
    write_files(project, {"calc.py": CALC, "driver.py": DRIVER})
    return loop


EXPECTED_UNTIL_ROLLBACK = ["original 1250.0", "step 1", "raised ValueError", "feedback on the exception accepted"]


def test_the_exception_raised_by_patched_code_is_feedback_the_optimizer_reads(calc, project):
    run = calc.trace_run([*MARKING, "driver.py", "step"], project)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [*EXPECTED_UNTIL_ROLLBACK, "step 2", "now 12.5"]
    second = calc.answer.prompts[1]
    feedback = second.rsplit("#Feedback", 1)[1]
    assert "it must accept the currency suffix" in feedback
    # The optimizer sees what was raised, and where in the code it was suggested.
    assert "ValueError" in second and "could not convert string to float" in second
    assert "float(text.replace" in second


def test_trace_daemon_rollback_brings_back_the_old_behaviour_in_the_running_process(calc, project):
    driver = calc.spawn([TRACE_RUN, *MARKING, "driver.py", "cli"], project)
    for expected in [*EXPECTED_UNTIL_ROLLBACK, "waiting for rollback"]:
        assert driver.read_line() == expected

    rollback = calc.daemon_cli("rollback", "calc")
    driver.send("go")

    assert rollback.returncode == 0, rollback.stderr
    assert driver.read_line() == "now 1250.0"
    driver.finish()
    assert driver.proc.returncode == 0


def test_tracer_rollback_brings_back_the_old_behaviour_in_the_running_process(calc, project):
    run = calc.trace_run([*MARKING, "driver.py", "api"], project)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [*EXPECTED_UNTIL_ROLLBACK, "rollback 2", "now 1250.0"]


def test_a_rollback_is_a_new_version_of_the_session(calc, project):
    run = calc.trace_run([*MARKING, "driver.py", "api"], project)
    assert run.returncode == 0, run.stderr

    status = calc.daemon_cli("status")

    assert "session calc: version 2, 1 steps" in status.stdout, status.stdout


SHOW_NEW_CODE = '''\
import inspect, traceback
import tracer
import calc

out = calc.parse_price("12,50 EUR")
tracer.feedback(out, "12,50 EUR is twelve euros fifty: expected 12.5.")
tracer.step(timeout=60)
print(inspect.getsource(calc.parse_price), end="")
try:
    calc.parse_price("12,50 EUR")
except ValueError:
    print(traceback.format_exc().splitlines()[-4:-1])
'''


def test_the_patched_code_is_what_getsource_and_tracebacks_show(calc, project):
    write_files(project, {"show.py": SHOW_NEW_CODE})

    run = calc.trace_run([*MARKING, "show.py"], project)

    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(RAISING)
    frame = run.stdout[len(RAISING):]
    assert 'return float(text.replace(",", "."))' in frame and "patch v1 of calc.parse_price" in frame
