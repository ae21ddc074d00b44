"""`trace-run` end to end: the program behaves exactly as under `python`, and its marked code is traced.

Each test writes a small program into a temporary directory and runs the real
`trace-run` command (the console script next to this interpreter) and, where
it is compared, plain `python`, in subprocesses. No daemon runs: the tracer
says once on stderr that tracing is off ("trace-live: ..."), which the
comparison removes; everything else must be byte-identical.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

TRACE_RUN = os.path.join(os.path.dirname(sys.executable), "trace-run")
TRACER_NOTICE = "trace-live: "


def env_for(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env["TRACE_DAEMON_SOCKET"] = str(tmp_path / "no-daemon" / "sock")
    env["TRACE_STATE_DIR"] = str(tmp_path / "state")
    env.update(extra)
    return env


def run(cmd, cwd, tmp_path, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env_for(tmp_path, **extra_env), capture_output=True, text=True, timeout=60)


def trace_run(args, cwd, tmp_path, **extra_env) -> subprocess.CompletedProcess:
    return run([TRACE_RUN, "--no-autostart", *args], cwd, tmp_path, **extra_env)


def without_notice(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith(TRACER_NOTICE))


def assert_same_as_python(python_args, trace_args, cwd, tmp_path):
    plain = run([sys.executable, *python_args], cwd, tmp_path)
    traced = trace_run([*trace_args, *python_args], cwd, tmp_path)
    assert traced.stdout == plain.stdout
    assert without_notice(traced.stderr) == plain.stderr
    assert traced.returncode == plain.returncode
    return plain, traced


def write(directory, name, source) -> str:
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(source))
    return path


INTROSPECTION = """\
import os, pickle, sys

class Point:
    def __init__(self, x):
        self.x = x

def describe(value):
    return f"<{value}>"

print("argv", sys.argv)
print("path0", sys.path[0])
print("main", __name__, __file__, __spec__, __package__, __cached__)
# the hook globals ("__@trace_*", docs/internals.md section 4) are the one visible addition
print("globals", sorted(name for name in globals() if not name.startswith("__@trace_")))
print("pickled", pickle.loads(pickle.dumps(Point(3))).x, type(pickle.loads(pickle.dumps(Point(3)))).__module__)
print("described", describe(42))
print("sibling", __import__("helper").VALUE)
print("to stderr", file=sys.stderr)
"""


@pytest.fixture
def program_dir(tmp_path):
    directory = tmp_path / "prog"
    directory.mkdir()
    write(directory, "helper.py", "VALUE = 'from helper'\n")
    return directory


@pytest.mark.parametrize("targets", [[], ["--target", "__main__:*"]], ids=["untraced", "traced"])
def test_script_sees_the_same_argv_path_globals_and_output(program_dir, tmp_path, targets):
    write(program_dir, "intro.py", INTROSPECTION)
    plain, _ = assert_same_as_python(["intro.py", "a", "-b", "--c=d"], targets, program_dir, tmp_path)
    assert "argv ['intro.py', 'a', '-b', '--c=d']" in plain.stdout


def test_script_given_by_absolute_path_from_another_directory(program_dir, tmp_path):
    path = write(program_dir, "intro.py", INTROSPECTION)
    assert_same_as_python([path], ["--target", "__main__:describe"], tmp_path, tmp_path)


def test_classes_defined_in_the_script_pickle_round_trip(program_dir, tmp_path):
    write(program_dir, "pickler.py", """
        import pickle
        class Box:
            def __init__(self, v):
                self.v = v
        box = pickle.loads(pickle.dumps(Box([1, 2])))
        print(type(box) is Box, box.v)
    """)
    result = trace_run(["--target", "__main__:*", "pickler.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True [1, 2]\n"


@pytest.mark.parametrize(
    "body, status",
    [
        ("print('fine')\n", 0),
        ("import sys\nsys.exit(3)\n", 3),
        ("raise SystemExit(3)\n", 3),
        ("import sys\nsys.exit('bye: something failed')\n", 1),
        ("import sys\nsys.exit(None)\n", 0),
        ("raise KeyboardInterrupt\n", -2),
    ],
    ids=["zero", "sys-exit-3", "systemexit-3", "exit-message", "exit-none", "keyboard-interrupt"],
)
def test_exit_status_and_message_are_the_programs(program_dir, tmp_path, body, status):
    write(program_dir, "ender.py", body)
    plain, _ = assert_same_as_python(["ender.py"], [], program_dir, tmp_path)
    assert plain.returncode == status


def test_uncaught_exception_exits_1_with_a_traceback_free_of_runner_frames(program_dir, tmp_path):
    write(program_dir, "crash.py", """
        def inner(n):
            return 10 / n

        def outer():
            return inner(0)

        outer()
    """)
    _, traced = assert_same_as_python(["crash.py"], ["--target", "__main__:*"], program_dir, tmp_path)
    assert traced.returncode == 1
    assert "ZeroDivisionError" in traced.stderr
    assert "tracer" not in without_notice(traced.stderr)
    assert without_notice(traced.stderr).startswith("Traceback (most recent call last):\n  File \"")


def test_error_while_importing_a_marked_module_shows_the_same_traceback(program_dir, tmp_path):
    write(program_dir, "fragile.py", """
        def helper():
            return 1

        raise LookupError("missing setting")
    """)
    write(program_dir, "imports_fragile.py", "import fragile\n")
    _, traced = assert_same_as_python(["imports_fragile.py"], ["--target", "fragile:*"], program_dir, tmp_path)
    assert "importlib" not in traced.stderr and "tracer" not in without_notice(traced.stderr)


def test_syntax_error_in_the_script_is_reported_like_python(program_dir, tmp_path):
    write(program_dir, "broken.py", "x = (\n")
    _, traced = assert_same_as_python(["broken.py"], [], program_dir, tmp_path)
    assert traced.returncode == 1 and "SyntaxError" in traced.stderr


def test_missing_script_fails_like_python(program_dir, tmp_path):
    plain, traced = assert_same_as_python(["nowhere.py"], [], program_dir, tmp_path)
    assert plain.returncode == 2


def test_dash_m_runs_a_package_module_as_main(program_dir, tmp_path):
    write(program_dir, "pkg/__init__.py", "")
    write(program_dir, "pkg/tool.py", """
        import sys
        def run(args):
            return "ran " + " ".join(args)
        print(__name__, __spec__.name, __package__, sys.argv[1:], sys.path[0])
        print(sorted(name for name in globals() if not name.startswith("__@trace_")))
        print(run(sys.argv[1:]))
    """)
    plain, _ = assert_same_as_python(["-m", "pkg.tool", "x", "--y"], ["--target", "pkg.tool:run"], program_dir, tmp_path)
    assert plain.stdout.startswith("__main__ pkg.tool pkg ['x', '--y']")


def test_dash_m_runs_a_package_main(program_dir, tmp_path):
    write(program_dir, "app/__init__.py", "")
    write(program_dir, "app/__main__.py", "print('app main', __name__, __spec__.name)\n")
    assert_same_as_python(["-m", "app"], [], program_dir, tmp_path)


def test_missing_module_fails_like_python(program_dir, tmp_path):
    plain, _ = assert_same_as_python(["-m", "no_such_module_here"], [], program_dir, tmp_path)
    assert plain.returncode == 1


def test_marked_main_functions_are_instrumented_before_the_script_runs(program_dir, tmp_path):
    write(program_dir, "marked.py", """
        def traced(x):
            return x + 1

        def plain(x):
            return x - 1

        def instrumented(f):
            return any(n.startswith("__@trace_") for n in f.__code__.co_names)

        print(instrumented(traced), instrumented(plain), traced(1), plain(1))
    """)
    result = trace_run(["--target", "__main__:traced", "marked.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True False 2 0\n"


def test_marked_main_functions_are_known_to_the_registry_while_the_script_runs(program_dir, tmp_path):
    write(program_dir, "live.py", """
        from tracer import ids, marking

        def answer(q):
            return q.upper()

        entry = marking.registry[ids.function_id("__main__", "answer")]
        print(entry.trainable, entry.function() is answer, answer("ok"))
        from tracer import params
        source = params.registry.get("live.answer")  # what the patcher swaps new code into
        print(source.kind, source.function() is answer)
    """)
    result = trace_run(["--trainable", "__main__:answer", "live.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True True OK\nsource True\n"


def test_imported_modules_are_instrumented_by_target(program_dir, tmp_path):
    write(program_dir, "lib.py", "def work(x):\n    return x * 2\n")
    write(program_dir, "uses_lib.py", """
        import lib
        print(any(n.startswith("__@trace_") for n in lib.work.__code__.co_names), lib.work(4))
    """)
    result = trace_run(["--target", "lib:work", "uses_lib.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True 8\n"


def test_targets_can_come_from_pyproject(program_dir, tmp_path):
    write(program_dir, "pyproject.toml", """
        [tool.trace]
        targets = ["lib:work"]
    """)
    write(program_dir, "lib.py", "def work(x):\n    return x * 2\n")
    write(program_dir, "uses_lib.py", """
        import lib
        print(any(n.startswith("__@trace_") for n in lib.work.__code__.co_names))
    """)
    result = trace_run(["uses_lib.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\n"


def test_params_named_on_the_command_line_are_declared(program_dir, tmp_path):
    write(program_dir, "prompts.py", "SYSTEM = 'You are terse.'\n")
    write(program_dir, "uses_params.py", """
        import prompts
        from tracer import params
        record = params.registry.get("prompts.SYSTEM")
        print(record.kind, record.get())
    """)
    result = trace_run(["--param", "prompts:SYSTEM", "uses_params.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "global You are terse.\n"


@pytest.mark.parametrize("granularity", ["call", "op"])
def test_main_params_are_declared_where_the_script_assigns_them(program_dir, tmp_path, granularity):
    write(program_dir, "agent.py", """
        from tracer import params

        SYSTEM = "Be brief."
        declared = params.registry.get("agent.SYSTEM")

        def answer(q):
            return SYSTEM + " " + q

        print(answer("hi"))
        print(declared.kind, declared.get())
    """)
    result = trace_run(["--granularity", granularity, "--target", "__main__:answer", "--param", "__main__:SYSTEM", "agent.py"],
                       program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Be brief. hi\nglobal Be brief.\n"


def test_main_params_of_a_script_without_marked_functions_are_declared_where_assigned(program_dir, tmp_path):
    write(program_dir, "config_only.py", """
        from tracer import params

        SYSTEM = "Be brief."
        print(params.registry.get("config_only.SYSTEM").get())
    """)
    result = trace_run(["--param", "__main__:SYSTEM", "config_only.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Be brief.\n"


def test_invalid_configuration_is_a_usage_error_before_the_program_runs(program_dir, tmp_path):
    write(program_dir, "ok.py", "print('should not run')\n")
    result = trace_run(["--target", "not-a-target", "ok.py"], program_dir, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "trace-run: error: --target 'not-a-target'" in result.stderr


def test_session_defaults_to_the_program_name_for_every_process(program_dir, tmp_path):
    write(program_dir, "named.py", """
        import os, subprocess, sys
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['TRACE_SESSION'])"],
                               capture_output=True, text=True)
        print(os.environ["TRACE_SESSION"], child.stdout.strip())
    """)
    result = trace_run(["named.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "named named\n"


def test_show_config_prints_merged_settings_and_their_sources(program_dir, tmp_path):
    result = run([TRACE_RUN, "--target", "a:f", "--show-config"], program_dir, tmp_path, TRACE_GRANULARITY="op")
    assert result.returncode == 0, result.stderr
    assert "targets      a:f    (command line)" in result.stdout
    assert "granularity  op    (environment)" in result.stdout


CHILD_CHECK = """
    def instrumented(f):
        return any(n.startswith("__@trace_") for n in f.__code__.co_names)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_children_are_traced(program_dir, tmp_path, method):
    write(program_dir, "worker.py", CHILD_CHECK + """
    def work(x):
        return x * 10, instrumented(work)
    """)
    write(program_dir, "spawner.py", CHILD_CHECK + """
    import multiprocessing as mp
    import sys
    import worker

    def local_work(x):
        return x + 1, instrumented(local_work)

    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        with ctx.Pool(1) as pool:
            print(pool.apply(worker.work, (4,)), pool.apply(local_work, (4,)))
    """)
    result = trace_run(["--target", "worker:work", "--target", "__main__:local_work", "spawner.py", method], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "(40, True) (5, True)\n"


def test_multiprocessing_spawn_of_a_dash_m_program_runs_its_marked_functions(program_dir, tmp_path):
    write(program_dir, "tasks/__init__.py", "")
    write(program_dir, "tasks/pool.py", CHILD_CHECK + """
    import multiprocessing as mp

    def square(x):
        return x * x, instrumented(square)

    if __name__ == "__main__":
        with mp.get_context("spawn").Pool(1) as pool:
            print(pool.map(square, [2, 3]))
    """)
    result = trace_run(["--target", "tasks.pool:square", "-m", "tasks.pool"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[(4, True), (9, True)]\n"


def test_python_subprocesses_are_traced_and_run_the_users_sitecustomize(program_dir, tmp_path):
    user_site = tmp_path / "usersite"
    write(user_site, "sitecustomize.py", "import os\nos.environ['USER_SITECUSTOMIZE_RAN'] = 'yes'\n")
    write(program_dir, "lib.py", CHILD_CHECK + """
    def work():
        return instrumented(work)
    """)
    write(program_dir, "child.py", """
        import os, sys
        import lib
        print(lib.work(), os.environ.get("USER_SITECUSTOMIZE_RAN"), any("bootstrap" in p for p in sys.path))
    """)
    write(program_dir, "parent.py", """
        import subprocess, sys
        out = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True)
        print(out.stdout.strip())
        sys.stderr.write(out.stderr)
    """)
    result = trace_run(["--target", "lib:work", "parent.py"], program_dir, tmp_path, PYTHONPATH=str(user_site))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True yes False\n"


def test_python_children_that_run_no_marked_code_stay_quiet(program_dir, tmp_path):
    write(program_dir, "lib.py", "def work():\n    return 1\n")
    write(program_dir, "parent.py", """
        import subprocess, sys
        out = subprocess.run([sys.executable, "-c", "print('child ran')"], capture_output=True, text=True)
        print(repr(out.stdout), repr(out.stderr), out.returncode)
    """)
    result = trace_run(["--target", "lib:work", "parent.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "'child ran\\n' '' 0\n"


def test_only_the_parent_says_that_tracing_is_off(program_dir, tmp_path):
    # The child runs marked code with no daemon reachable: its stderr (which
    # the parent program may parse) must stay exactly as without tracing.
    write(program_dir, "lib.py", "def work():\n    return 1\n")
    write(program_dir, "child.py", "import lib\nprint(lib.work())\n")
    write(program_dir, "parent.py", """
        import subprocess, sys
        out = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True)
        print(repr(out.stdout), repr(out.stderr), out.returncode)
        import lib
        lib.work()
    """)
    result = trace_run(["--target", "lib:work", "parent.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "'1\\n' '' 0\n"
    assert result.stderr.count(TRACER_NOTICE + "tracing is off") == 1


def test_in_process_children_connect_to_the_parents_optimizer(program_dir, tmp_path):
    write(program_dir, "lib.py", "def work():\n    return 1\n")
    write(program_dir, "child.py", """
        import lib
        from tracer import runtime
        lib.work()
        print(runtime.is_connected())
    """)
    write(program_dir, "parent.py", """
        import subprocess, sys
        from tracer import runtime
        child = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True)
        print(runtime.is_connected(), child.stdout.strip(), child.stderr.strip() or "-")
    """)
    result = trace_run(["--in-process", "--target", "lib:work", "parent.py"], program_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True True -\n"
    assert not os.path.exists(tmp_path / "no-daemon" / "sock")  # no daemon was started


@pytest.fixture
def daemon():
    """A real `trace-daemon serve` on a private socket (short path: AF_UNIX limits it to ~100 bytes)."""
    directory = tempfile.mkdtemp(prefix="trd-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(TRACE_DAEMON_SOCKET=os.path.join(directory, "d.sock"), TRACE_STATE_DIR=os.path.join(directory, "state"))
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "trace-daemon"), "serve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(env["TRACE_DAEMON_SOCKET"])
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"trace-daemon serve did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
    yield env
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_calls_of_a_marked_function_reach_the_daemon_as_graph_nodes(program_dir, daemon):
    write(program_dir, "lib.py", "def work(x):\n    return x * 2\n")
    write(program_dir, "app.py", """
        import os, subprocess, sys
        import lib
        from tracer import runtime
        from tracer.config import untraced_environ

        print([lib.work(i) for i in range(3)])
        assert runtime.flush(10.0)
        # ask the daemon while this process (and so its episode) is still alive
        daemon = os.path.join(os.path.dirname(sys.executable), "trace-daemon")
        graph = subprocess.run([daemon, "graph", "e2e-run", "--format", "json"], env=untraced_environ(),
                               capture_output=True, text=True, check=True)
        print(graph.stdout)
    """)
    result = subprocess.run(
        [TRACE_RUN, "--session", "e2e-run", "--target", "lib:work", "app.py"],
        cwd=program_dir, env=daemon, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first_line, graph_text = result.stdout.split("\n", 1)
    assert first_line == "[0, 2, 4]"
    graph = json.loads(graph_text)
    calls = [node for node in graph["nodes"] if node.get("kind") == "call"]
    assert [(c["func"]["module"], c["func"]["qualname"]) for c in calls] == [("lib", "work")] * 3
    assert calls[0]["func"]["source"] == "def work(x):\n    return x * 2\n"


def test_spawned_children_join_the_parents_session_on_the_daemon(program_dir, daemon):
    write(program_dir, "worker.py", "def work(x):\n    return x + 1\n")
    write(program_dir, "fleet.py", """
        import json, multiprocessing as mp, os, subprocess, sys
        import worker
        from tracer.config import untraced_environ

        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(1) as pool:
                print(pool.apply(worker.work, (1,)), worker.work(2))
                daemon = os.path.join(os.path.dirname(sys.executable), "trace-daemon")
                status = json.loads(subprocess.run([daemon, "status", "--json"], env=untraced_environ(),
                                                   capture_output=True, text=True, check=True).stdout)
                sessions = {s["name"]: s for s in status["sessions"]}
                print(len(sessions["fleet"]["processes"]))
    """)
    result = subprocess.run(
        [TRACE_RUN, "--target", "worker:work", "fleet.py"],
        cwd=program_dir, env=daemon, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 3\n2\n"


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_configuration_alone_makes_a_script_optimisable_live(program_dir, tmp_path):
    # No decorator and no tracer.param in the program: --trainable and --param mark it.
    write(program_dir, "agent.py", """
        import tracer

        SYSTEM = "Be brief."

        def answer(q):
            return SYSTEM + " " + q

        tracer.feedback(answer("hi"), "too short")
        tracer.step(timeout=30, suggest={
            "agent.SYSTEM": "Be thorough.",
            "agent.answer": "def answer(q):\\n    return SYSTEM.upper() + ' ' + q\\n",
        })
        print(SYSTEM)
        print(answer("hi"))
    """)
    directory = tempfile.mkdtemp(prefix="trh-")  # short: the in-process service's socket lives under it
    try:
        result = trace_run(
            ["--in-process", "--trainable", "__main__:answer", "--param", "__main__:SYSTEM", "agent.py"],
            program_dir, tmp_path,
            TRACE_STATE_DIR=os.path.join(directory, "state"),
            TRACE_OPTIMIZER="tests.daemon.scripted_optimizer:factory",  # deterministic optimizer, no LLM
            PYTHONPATH=REPO,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Be thorough.\nBE THOROUGH. hi\n"


def test_star_import_of_a_marked_module_brings_only_the_modules_own_names(program_dir, tmp_path):
    # The hook names live in the module's globals; they must stay out of
    # `from module import *` (they start with "_", like any private name).
    write(program_dir, "lib.py", "def work():\n    return 1\n")
    write(program_dir, "main.py", """
        before = set(globals())
        from lib import *
        print(sorted(set(globals()) - before - {"before"}), work())
    """)
    plain, traced = assert_same_as_python(["main.py"], ["--target", "lib:work"], program_dir, tmp_path)
    assert traced.stdout == "['work'] 1\n"
