"""End to end: a traced program is optimised by the real daemon, then `trace-daemon export` writes a diff
that `git apply` accepts and that makes the files behave like the patched process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

LIB = textwrap.dedent('''\
    import tracer

    PROMPT = tracer.param("Be brief.")


    @tracer.bundle(trainable=True)
    def shout(text):
        return PROMPT + " " + text.upper()
''')

DRIVER = textwrap.dedent('''\
    import json, sys
    import tracer
    import lib

    tracer.session("exported")
    out = lib.shout("hi")
    tracer.feedback(out, "needs more energy")
    tracer.step(timeout=30, suggest={
        "lib.PROMPT": "Be loud.",
        "lib.shout": "@tracer.bundle(trainable=True)\\ndef shout(text):\\n    return PROMPT + ' ' + text.upper() + '!!'\\n",
    })
    print(json.dumps([lib.shout("hi"), lib.shout("there")]))
''')

FRESH = "import json, lib; print(json.dumps([lib.shout('hi'), lib.shout('there')]))"


def git(cwd, *args):
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_trace_daemon_export_diff_reproduces_the_optimised_program(env, daemon, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "lib.py").write_text(LIB)
    (project / "driver.py").write_text(DRIVER)
    git(project, "init", "-q")
    git(project, "add", "lib.py")
    git(project, "commit", "-qm", "original")

    run = subprocess.run([sys.executable, "driver.py"], cwd=project, env=env.environ(), capture_output=True,
                         text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    patched_outputs = json.loads(run.stdout.strip().splitlines()[-1])
    assert patched_outputs == ["Be loud. HI!!", "Be loud. THERE!!"]

    export = subprocess.run([sys.executable, "-m", "optimizer_service", "export", "exported", "--format", "diff"],
                            cwd=project, env=env.environ(), capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert "+PROMPT = tracer.param(\"Be loud.\")" in export.stdout
    assert "+    return PROMPT + ' ' + text.upper() + '!!'" in export.stdout
    (tmp_path / "changes.diff").write_text(export.stdout)
    applied = git(project, "apply", str(tmp_path / "changes.diff"))
    assert applied.returncode == 0, export.stdout + applied.stderr

    fresh = subprocess.run([sys.executable, "-c", FRESH], cwd=project, env=env.environ(), capture_output=True,
                           text=True, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout) == patched_outputs
