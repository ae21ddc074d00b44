"""Closing the loop across processes: a session's new version reaches every process of the session,
survives `kill -9` of the daemon, and is where a process that joins later starts from."""
from __future__ import annotations

import pytest

from tests.e2e.helpers import TRACE_RUN, is_optoprime_prompt, optoprime_answer, optoprime_variables, write_files

GREETING = '''\
TEMPLATE = "hi {name}"


def render(name):
    return TEMPLATE.format(name=name)
'''

# Serves until the template changes under it; it never gives feedback.
WORKER = '''\
import sys, time
import greeting

first = greeting.render("worker")
print("first", first, flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    current = greeting.render("worker")
    if current != first:
        print("patched", current, flush=True)
        raise SystemExit(0)
    time.sleep(0.02)
print("no patch arrived", flush=True)
raise SystemExit(1)
'''

LEARNER = '''\
import tracer
import greeting

out = greeting.render("learner")
tracer.feedback(out, "Greet politely: start with 'Hello' and end with '!'.")
print("step", tracer.step(timeout=60), flush=True)
print("learner", greeting.render("learner"), flush=True)
'''

# Its first lines read the parameter: the learned value must be in place before the program runs.
LATECOMER = '''\
import greeting
print("import-time TEMPLATE", repr(greeting.TEMPLATE), flush=True)
print("latecomer", greeting.render("late"), flush=True)
'''

# A module that uses its parameter while it is being imported.
GREETING_USED_AT_IMPORT = GREETING + '''
BANNER = TEMPLATE.format(name="everyone")
'''

BANNER_READER = '''\
import greeting
print("banner", greeting.BANNER, flush=True)
'''

MARKING = ["--session", "team", "--target", "greeting:render", "--param", "greeting:TEMPLATE"]


def polite_template(request):
    if not is_optoprime_prompt(request):
        return optoprime_answer({})
    names = [name for type_name, name, _ in optoprime_variables(request.prompt_text) if type_name == "str"]
    return optoprime_answer({name: "Hello {name}!" for name in names})


@pytest.fixture
def team(loop, project):
    loop.answer = polite_template
    write_files(project, {"greeting.py": GREETING, "worker.py": WORKER, "learner.py": LEARNER,
                          "latecomer.py": LATECOMER})
    return loop


def start_worker(loop, project):
    worker = loop.spawn([TRACE_RUN, *MARKING, "worker.py"], project)
    assert worker.read_line() == "first hi worker"
    return worker


def test_the_learners_patch_reaches_a_process_that_gave_no_feedback(team, project):
    worker = start_worker(team, project)

    learner = team.trace_run([*MARKING, "learner.py"], project)

    assert learner.returncode == 0, learner.stderr
    assert learner.stdout.splitlines()[-1] == "learner Hello learner!"
    assert worker.read_line() == "patched Hello worker!"
    worker.finish()
    assert worker.proc.returncode == 0


def test_a_process_started_after_kill_9_of_the_daemon_starts_from_the_learned_parameters(team, project):
    learner = team.trace_run([*MARKING, "learner.py"], project)
    assert learner.returncode == 0, learner.stderr
    assert learner.stdout.splitlines()[-1] == "learner Hello learner!"

    team.kill_daemon()
    # The latecomer finds no daemon and starts one on demand; it reads the session from SQLite.
    latecomer = team.trace_run([*MARKING, "latecomer.py"], project)

    assert latecomer.returncode == 0, latecomer.stderr
    assert latecomer.stdout.splitlines() == ["import-time TEMPLATE 'Hello {name}!'", "latecomer Hello late!"], \
        latecomer.stderr + team.daemon_log()


def test_a_running_process_survives_kill_9_of_the_daemon_and_receives_the_next_version(team, project):
    worker = start_worker(team, project)
    team.kill_daemon()

    # The learner starts a new daemon on demand; the worker reconnects to it by itself.
    learner = team.trace_run([*MARKING, "learner.py"], project)

    assert learner.returncode == 0, learner.stderr
    assert worker.read_line(timeout=30) == "patched Hello worker!"


# Gives feedback, then waits (connected) until the test lets it finish.
FEEDBACK_GIVER = '''\
import sys
import tracer
import greeting

out = greeting.render("giver")
tracer.feedback(out, "The greeting must end with '!'.")
print("feedback given", flush=True)
sys.stdin.readline()
print("giver", greeting.render("giver"), flush=True)
'''


def test_one_step_optimises_the_feedback_every_process_of_the_session_gave(team, project):
    write_files(project, {"giver.py": FEEDBACK_GIVER})
    giver = team.spawn([TRACE_RUN, *MARKING, "giver.py"], project)
    assert giver.read_line() == "feedback given"

    learner = team.trace_run([*MARKING, "learner.py"], project)
    giver.send("go")

    assert learner.returncode == 0, learner.stderr
    [problem] = team.optoprime_requests()
    feedback = problem.prompt_text.rsplit("#Feedback", 1)[1]
    assert "The greeting must end with '!'." in feedback
    assert "start with 'Hello'" in feedback
    assert giver.read_line() == "giver Hello giver!"


def test_feedback_of_a_process_that_has_exited_is_optimised_by_the_next_step_of_the_session(team, project):
    write_files(project, {
        "give_and_exit.py": "import tracer, greeting\n"
                            "tracer.feedback(greeting.render('gone'), \"Start with 'Hello' and end with '!'.\")\n",
        "step_only.py": "import tracer, greeting\nprint(tracer.step(timeout=60).version, greeting.render('here'))\n",
    })
    gone = team.trace_run([*MARKING, "give_and_exit.py"], project)
    assert gone.returncode == 0, gone.stderr

    stepper = team.trace_run([*MARKING, "step_only.py"], project)

    assert stepper.returncode == 0, stepper.stderr
    assert stepper.stdout.splitlines() == ["1 Hello here!"]
    [problem] = team.optoprime_requests()
    inputs = problem.prompt_text.rsplit("#Inputs", 1)[1].split("#Others", 1)[0]
    assert "(str) name='gone'" in inputs, inputs  # the exited process's call is what is optimised


def test_the_optimizers_memory_of_earlier_feedback_survives_kill_9_of_the_daemon(team, project):
    learner = team.trace_run([*MARKING, "learner.py"], project)
    assert learner.returncode == 0, learner.stderr
    team.kill_daemon()
    write_files(project, {"second.py": "import tracer, greeting\n"
                                      "tracer.feedback(greeting.render('again'), 'Now mention the shop.')\n"
                                      "tracer.step(timeout=60)\n"})

    second = team.trace_run([*MARKING, "second.py"], project)

    assert second.returncode == 0, second.stderr
    first_problem, second_problem = (r.prompt_text for r in team.optoprime_requests())
    assert "in the past" not in first_problem
    memory = second_problem.split("in the past", 1)[1]
    assert '"TEMPLATE": "hi {name}"' in memory and "start with 'Hello'" in memory, memory


LOUD = '''\
def shout(text):
    return text
'''

# Changes a parameter of greeting and the code of loud in one step.
LOUD_LEARNER = '''\
import tracer
import greeting, loud

out = loud.shout(greeting.render("learner"))
tracer.feedback(out, "Greet politely: start with 'Hello' and end with '!', in capitals.")
print("step", tracer.step(timeout=60).version, flush=True)
print("learner", loud.shout(greeting.render("learner")), flush=True)
'''


def polite_template_and_loud_code(request):
    if not is_optoprime_prompt(request):
        return optoprime_answer({})
    suggestion = {}
    for type_name, name, value in optoprime_variables(request.prompt_text):
        if type_name == "str":
            suggestion[name] = "Hello {name}!"
        elif type_name == "code" and value.startswith("def shout"):
            suggestion[name] = "def shout(text):\n    return text.upper()\n"
    return optoprime_answer(suggestion)


def test_a_process_without_the_module_of_a_new_function_body_still_applies_the_rest_of_the_version(team, project):
    team.answer = polite_template_and_loud_code
    write_files(project, {"loud.py": LOUD, "loud_learner.py": LOUD_LEARNER})
    marking = [*MARKING, "--trainable", "loud:shout"]
    worker = team.spawn([TRACE_RUN, *marking, "worker.py"], project)  # never imports loud
    assert worker.read_line() == "first hi worker"

    learner = team.trace_run([*marking, "loud_learner.py"], project)

    assert learner.returncode == 0, learner.stderr
    assert learner.stdout.splitlines() == ["step 1", "learner HELLO LEARNER!"]
    assert worker.read_line() == "patched Hello worker!"


# The parent steps; its multiprocessing child (traced by trace-run too) only serves.
MULTIPROCESSING = '''\
import multiprocessing, sys, time
import tracer
import greeting


def child(queue):
    first = greeting.render("child")
    queue.put(first)
    deadline = time.monotonic() + 30
    while greeting.render("child") == first and time.monotonic() < deadline:
        time.sleep(0.02)
    queue.put(greeting.render("child"))


if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    queue = context.Queue()
    worker = context.Process(target=child, args=(queue,))
    worker.start()
    print("child", queue.get(timeout=60), flush=True)
    tracer.feedback(greeting.render("parent"), "Greet politely: start with 'Hello' and end with '!'.")
    print("step", tracer.step(timeout=60).version, flush=True)
    print("child", queue.get(timeout=60), flush=True)
    worker.join(30)
'''


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_a_multiprocessing_child_receives_the_version_its_parent_learned(team, project, start_method):
    write_files(project, {"parent.py": MULTIPROCESSING})

    run = team.trace_run([*MARKING, "parent.py", start_method], project)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["child hi child", "step 1", "child Hello child!"]


def test_a_late_process_uses_the_learned_parameter_even_in_its_modules_import_time_code(team, project):
    learner = team.trace_run([*MARKING, "learner.py"], project)
    assert learner.returncode == 0, learner.stderr
    write_files(project, {"greeting.py": GREETING_USED_AT_IMPORT, "banner.py": BANNER_READER})

    late = team.trace_run([*MARKING, "banner.py"], project)

    assert late.returncode == 0, late.stderr
    assert late.stdout.splitlines() == ["banner Hello everyone!"]


# The same module marked in code: the parameter is declared where it is assigned.
GREETING_IN_CODE = '''\
import tracer

TEMPLATE = tracer.param("hi {name}", name="template")
BANNER = TEMPLATE.format(name="everyone")


@tracer.bundle()
def render(name):
    return TEMPLATE.format(name=name)
'''


def test_a_late_process_declaring_the_parameter_in_code_uses_the_learned_value_at_import_time(team, project):
    write_files(project, {"greeting.py": GREETING_IN_CODE, "banner.py": BANNER_READER})
    learner = team.trace_run(["--session", "team", "learner.py"], project)
    assert learner.returncode == 0, learner.stderr
    assert learner.stdout.splitlines()[-1] == "learner Hello learner!"

    late = team.trace_run(["--session", "team", "banner.py"], project)

    assert late.returncode == 0, late.stderr
    assert late.stdout.splitlines() == ["banner Hello everyone!"]


def test_feedback_given_before_kill_9_is_optimised_with_its_execution_trace_after_the_restart(team, project):
    write_files(project, {
        "give_and_exit.py": "import tracer, greeting\n"
                            "tracer.feedback(greeting.render('gone'), \"Start with 'Hello' and end with '!'.\")\n",
        "step_only.py": "import tracer, greeting\nprint(tracer.step(timeout=60).version, greeting.render('here'))\n",
    })
    gone = team.trace_run([*MARKING, "give_and_exit.py"], project)
    assert gone.returncode == 0, gone.stderr
    team.kill_daemon()

    stepper = team.trace_run([*MARKING, "step_only.py"], project)

    assert stepper.returncode == 0, stepper.stderr
    assert stepper.stdout.splitlines() == ["1 Hello here!"]
    [problem] = team.optoprime_requests()
    inputs = problem.prompt_text.rsplit("#Inputs", 1)[1].split("#Others", 1)[0]
    assert "(str) name='gone'" in inputs, inputs
