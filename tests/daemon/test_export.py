"""optimizer_service.export: a session's parameters as JSON and as a diff `git apply` accepts."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimizer_service.export import (
    ExportError,
    ExportParam,
    export_parameters,
    export_session,
    parse_where,
    render_diff,
    render_json,
)
from optimizer_service.store import StepRecord, Store

REPO = Path(__file__).resolve().parents[2]

APP = '''\
import tracer

PROMPT = tracer.param("Answer briefly.", constraint="one sentence")  # the system prompt
RETRIES: int = 2


class Agent:
    temperature = tracer.param(0.5)

    def __init__(self):
        self.style = tracer.param("formal")

    def run(self, question, limit=tracer.param(3)):
        """Answer a question."""
        return f"{PROMPT} [{self.style}] {question[:limit]} t={self.temperature}"


def shout(text):
    return text.upper()
'''


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(tmp_path):
    """A git repository holding the program's original files (committed)."""
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "app.py").write_text(APP)
    assert git(root, "init", "-q").returncode == 0
    git(root, "add", ".")
    assert git(root, "commit", "-qm", "original").returncode == 0
    return root


def apply_check(root: Path, diff: str) -> subprocess.CompletedProcess:
    (root.parent / "changes.diff").write_text(diff)
    return git(root, "apply", "--check", str(root.parent / "changes.diff"))


def param(root: Path, name, kind, line, target, old, new) -> ExportParam:
    return ExportParam(name=name, kind=kind, file=str(root / "pkg" / "app.py"), line=line, target=target, old=old, new=new)


def test_json_lists_every_parameter_with_its_exported_value(project):
    params = [param(project, "app.PROMPT", "global", 3, "PROMPT", "Answer briefly.", "Answer in detail."),
              param(project, "Agent.temperature", "class_attr", 8, "Agent.temperature", 0.5, 0.5),
              ExportParam("app.shout", "source", None, None, "shout", "def shout(text): ...", "def shout(text): ..."),
              ExportParam("blob", "global", None, None, "BLOB", b"a", b"\x00\xff")]
    data = json.loads(render_json(params, session="s1", version=4))
    assert (data["session"], data["version"]) == ("s1", 4)
    assert data["parameters"]["app.PROMPT"] == {"kind": "global", "changed": True, "value": "Answer in detail.",
                                                "file": str(project / "pkg" / "app.py"), "line": 3}
    assert data["parameters"]["Agent.temperature"]["changed"] is False
    assert data["parameters"]["app.shout"]["source"] == "def shout(text): ..."
    assert data["parameters"]["blob"]["value"] == {"base64": "AP8="}


def test_the_diff_replaces_literals_in_place_and_git_apply_accepts_it(project):
    params = [
        param(project, "app.PROMPT", "global", 3, "PROMPT", "Answer briefly.", "Answer in detail."),
        param(project, "app.RETRIES", "global", None, "RETRIES", 2, 4),
        param(project, "Agent.temperature", "class_attr", 8, "Agent.temperature", 0.5, 0.25),
        param(project, "Agent.style", "instance_attr", 11, "Agent.style", "formal", "casual"),
        param(project, "Agent.run.limit", "default", 13, "Agent.run.limit", 3, 10),
    ]
    diff = render_diff(params, base_dir=project)
    assert apply_check(project, diff).returncode == 0, diff
    assert git(project, "apply", str(project.parent / "changes.diff")).returncode == 0
    text = (project / "pkg" / "app.py").read_text()
    assert "PROMPT = tracer.param(\"Answer in detail.\", constraint=\"one sentence\")  # the system prompt\n" in text
    assert "RETRIES: int = 4\n" in text
    assert "    temperature = tracer.param(0.25)\n" in text
    assert "        self.style = tracer.param(\"casual\")\n" in text
    assert "    def run(self, question, limit=tracer.param(10)):\n" in text


def test_a_new_method_body_is_indented_in_place_and_its_header_stays(project):
    new = '@some_decorator\ndef run(self, question, limit=3):\n  """Answer better."""\n  return question\n'
    params = [param(project, "app.Agent.run", "source", 13, "Agent.run", None, new),
              param(project, "Agent.run.limit", "default", 13, "Agent.run.limit", 3, 7)]
    diff = render_diff(params, base_dir=project)
    assert apply_check(project, diff).returncode == 0, diff
    git(project, "apply", str(project.parent / "changes.diff"))
    text = (project / "pkg" / "app.py").read_text()
    assert ('    def run(self, question, limit=tracer.param(7)):\n'
            '        """Answer better."""\n'
            '        return question\n') in text
    assert "some_decorator" not in text


def test_a_multiline_string_in_new_source_is_kept_verbatim(project):
    new = 'def shout(text):\n    return f"""{text}\nsecond line\n  indented"""\n'
    diff = render_diff([param(project, "app.shout", "source", 18, "shout", "def shout(text):\n    return text.upper()\n", new)],
                       base_dir=project)
    assert apply_check(project, diff).returncode == 0, diff
    git(project, "apply", str(project.parent / "changes.diff"))
    assert 'return f"""{text}\nsecond line\n  indented"""\n' in (project / "pkg" / "app.py").read_text()


def test_a_file_without_a_final_newline_gets_a_diff_git_accepts(project):
    path = project / "pkg" / "app.py"
    path.write_text(APP.rstrip("\n"))
    git(project, "commit", "-qam", "no newline at the end")
    diff = render_diff([param(project, "app.shout", "source", 18, "shout", None, "def shout(text):\n    return text\n")],
                       base_dir=project)
    assert "\\ No newline at end of file" in diff
    assert apply_check(project, diff).returncode == 0, diff


def test_a_function_changed_since_the_run_is_left_out_with_the_reason(project):
    params = [param(project, "app.shout", "source", 18, "shout", "def shout(text):\n    return text.lower()\n",
                    "def shout(text):\n    return text\n"),
              param(project, "app.RETRIES", "global", None, "RETRIES", 2, 5)]
    diff = render_diff(params, base_dir=project)
    assert diff.startswith("# not in the diff: app.shout: ")
    assert "changed since the run: shout is not the source that was optimised" in diff
    assert "+RETRIES: int = 5" in diff
    assert apply_check(project, diff).returncode == 0


@pytest.mark.parametrize("new, reason", [
    (float("nan"), "has no Python literal form"),
    (object(), "has no Python literal form"),
])
def test_a_value_without_a_literal_form_is_left_out(project, new, reason):
    diff = render_diff([param(project, "app.RETRIES", "global", None, "RETRIES", 2, new)], base_dir=project)
    assert diff.startswith("# not in the diff: app.RETRIES: ") and reason in diff


def test_parameters_of_unknown_or_outside_files_are_left_out(project, tmp_path):
    outside = tmp_path / "elsewhere.py"
    outside.write_text("X = 1\n")
    params = [ExportParam("repl.X", "global", None, None, "X", 1, 2),
              ExportParam("elsewhere.X", "global", str(outside), 1, "X", 1, 2)]
    diff = render_diff(params, base_dir=project)
    assert "repl.X: its file is not known" in diff
    assert "is outside" in diff and "run the export from the project directory" in diff


def test_an_unknown_format_is_an_export_error():
    with pytest.raises(ExportError, match="unknown export format 'xml'; use one of json, diff"):
        export_parameters([], "xml")


def test_where_of_a_param_def_gives_kind_target_file_and_line():
    assert parse_where("default app:Agent.run.limit @ /src/app.py:13") == {
        "kind": "default", "module": "app", "target": "Agent.run.limit", "file": "/src/app.py", "line": 13}
    assert parse_where("global app:X @ <trace-live patch v2 of app.shout>:1")["file"] is None
    assert parse_where("app:Agent.run") == {"kind": None, "module": "app", "target": "Agent.run", "file": None, "line": None}
    assert parse_where("") == {}


def test_a_source_parameter_takes_its_place_from_its_function_def():
    definition = {"name": "app.shout", "kind": "source", "where": "app:shout", "value": "def shout(t): ..."}
    from_file = ExportParam.from_definition(definition, "new", function_def={"qualname": "shout", "file": "/src/app.py", "line": 18})
    from_patch = ExportParam.from_definition(definition, "new", function_def={"qualname": "shout", "file": "<trace-live patch v1 of app.shout>", "line": 1})
    assert (from_file.file, from_file.line, from_file.target) == ("/src/app.py", 18, "shout")
    assert (from_patch.file, from_patch.line, from_patch.module) == (None, None, "app")


def test_a_function_known_only_by_module_is_found_under_the_base_directory(project):
    definition = {"name": "pkg.app.shout", "kind": "source", "where": "pkg.app:shout",
                  "value": "def shout(text):\n    return text.upper()\n"}
    exported = ExportParam.from_definition(definition, "def shout(text):\n    return text\n", function_def={
        "module": "pkg.app", "qualname": "shout", "file": "<trace-live patch v1 of pkg.app.shout>", "line": 1})
    diff = render_diff([exported], base_dir=project)
    assert "+    return text\n" in diff
    assert apply_check(project, diff).returncode == 0, diff


PROCESS = '''
import json, sys
from dataclasses import asdict
sys.path.insert(0, sys.argv[1])
import tracer
from tracer.params import register_source_param, registry
from pkg import app
agent = app.Agent()
register_source_param(app.shout)
before = {r.name: asdict(r.definition()) for r in registry.records()}
functions = {r.name: {"module": r.module, "qualname": r.target, "file": r.file, "line": r.line}
             for r in registry.records() if r.kind == "source"}
from protocol import messages as m
from tracer.patcher import apply_patch
results = apply_patch(m.Patch(version=1, items=[
    m.PatchItem("pkg.app.PROMPT", "value", value="Answer in detail."),
    m.PatchItem("Agent.temperature", "value", value=0.9),
    m.PatchItem("Agent.style", "value", value="casual"),
    m.PatchItem("Agent.run.limit", "value", value=8),
    m.PatchItem("pkg.app.shout", "source", source="def shout(text):\\n    return text.upper() + '!'\\n"),
]))
assert all(r.ok for r in results), results
outputs = [agent.run("what is the answer?"), app.Agent().run("q" * 20), app.shout("hey")]
after = {r.name: r.get() for r in registry.records()}
print(json.dumps({"before": before, "functions": functions, "after": after, "outputs": outputs}))
'''

FRESH = '''
import json, sys
sys.path.insert(0, sys.argv[1])
from pkg import app
agent = app.Agent()
print(json.dumps([agent.run("what is the answer?"), app.Agent().run("q" * 20), app.shout("hey")]))
'''


def test_the_patched_copy_behaves_like_the_patched_process(project):
    live = subprocess.run([sys.executable, "-c", PROCESS, str(project)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert live.returncode == 0, live.stderr
    state = json.loads(live.stdout)
    params = [ExportParam.from_definition(state["before"][name], state["after"][name],
                                          function_def=state["functions"].get(name)) for name in state["before"]]
    diff = export_parameters(params, "diff", base_dir=project)
    assert apply_check(project, diff).returncode == 0, diff
    git(project, "apply", str(project.parent / "changes.diff"))
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(project)], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout) == state["outputs"]


def test_export_session_reads_definitions_and_the_latest_version_from_the_store(project, tmp_path):
    store = Store(tmp_path / "state.db")
    try:
        store.ensure_session("s")
        app = str(project / "pkg" / "app.py")
        store.save_definitions("s", [], [
            {"name": "app.PROMPT", "type": "str", "value": "Answer briefly.", "kind": "global",
             "where": f"global pkg.app:PROMPT @ {app}:3", "constraint": None, "trainable": True},
            {"name": "app.shout", "type": "code", "value": "def shout(text):\n    return text.upper()\n",
             "kind": "source", "where": "pkg.app:shout", "constraint": None, "trainable": True},
        ])
        store.save_definitions("s", [
            {"id": 1, "module": "pkg.app", "qualname": "shout", "source": "def shout(text):\n    return text.upper()\n",
             "doc": None, "signature": "(text)", "file": app, "line": 18, "trainable": True, "freevars": []},
        ], [])
        now = time.time()
        new = {"app.PROMPT": {"kind": "value", "value": "Be precise."},
               "app.shout": {"kind": "source", "value": "def shout(text):\n    return text.title()\n"}}
        store.commit_step(StepRecord(session="s", step_index=1, started=now, finished=now, ok=True),
                          feedback_ids=[], rejection_ids=[], new_params=new, changes=[], memory=None)
        data = json.loads(export_session(store, "s", "json"))
        diff = export_session(store, "s", "diff", base_dir=project)
        original = json.loads(export_session(store, "s", "json", version=0))
    finally:
        store.close()
    assert data["version"] == 1
    assert data["parameters"]["app.PROMPT"]["value"] == "Be precise."
    assert original["parameters"]["app.PROMPT"]["value"] == "Answer briefly."
    assert "+    return text.title()" in diff and "tracer.param(\"Be precise.\"" in diff
    assert apply_check(project, diff).returncode == 0, diff


def test_export_session_of_an_unknown_session_is_an_export_error(tmp_path):
    store = Store(tmp_path / "state.db")
    try:
        with pytest.raises(ExportError, match="no session 'ghost'"):
            export_session(store, "ghost", "json")
    finally:
        store.close()


@pytest.mark.parametrize("new", ['He said "hi" and \'bye\'', "tab\tand\nnewline", "back\\slash"])
def test_a_new_string_keeps_the_double_quotes_and_reads_back_equal(project, new):
    diff = render_diff([param(project, "app.PROMPT", "global", 3, "PROMPT", "Answer briefly.", new)], base_dir=project)
    assert apply_check(project, diff).returncode == 0, diff
    git(project, "apply", str(project.parent / "changes.diff"))
    line = (project / "pkg" / "app.py").read_text().splitlines()[2]
    literal = line[len("PROMPT = tracer.param("): line.index(", constraint=")]
    assert literal.startswith('"')
    assert eval(literal) == new  # noqa: S307 - a literal written by the export, read back
