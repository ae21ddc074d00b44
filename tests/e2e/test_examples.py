"""Every program in examples/ runs unmodified under trace-run, optimised by the real daemon, with the
scripted LLM of examples/scripted_llm.py answering through the real OpenAI SDK, and shows the improvement.

Each example is copied to a temporary directory (with the pyproject.toml that marks it) so that running
it leaves the repository as it was.
"""
from __future__ import annotations

import shutil

import pytest

from tests.e2e.helpers import REPO, load_scripted_llm

SCRIPTED_LLM = load_scripted_llm()


@pytest.fixture
def run_example(loop, tmp_path):
    """Run examples/NAME/SCRIPT under trace-run, the scripted LLM answering; return the completed process."""
    loop.answer = SCRIPTED_LLM.respond

    def run(name: str, script: str):
        copy = tmp_path / name
        shutil.copytree(REPO / "examples" / name, copy, ignore=shutil.ignore_patterns("__pycache__"))
        return loop.trace_run([script], copy, timeout=120)

    return run


def test_numeric_example_makes_the_output_positive(run_example):
    run = run_example("numeric", "numeric.py")

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1] == "the output is positive: done"
    assert "step: version 1: numeric.X: -1.0 -> " in run.stdout


def test_strange_sort_example_passes_every_case_after_its_code_is_rewritten(run_example):
    run = run_example("strange_sort", "strange_sort.py")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "round 1: 3/5 cases pass" in run.stdout
    assert "5/5 cases pass" in run.stdout
    assert run.stdout.splitlines()[-1] == "all cases pass: done"


def test_shared_session_example_patches_both_workers_while_they_run(run_example):
    run = run_example("shared_session", "team.py")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "[Ada] Hello Ada!  (patched while running)" in run.stdout.splitlines()
    assert "[Linus] Hello Linus!  (patched while running)" in run.stdout.splitlines()
    assert "[learner] Hello Grace!" in run.stdout.splitlines()


def test_sales_agent_example_greets_every_user_in_their_language(run_example):
    run = run_example("sales_agent", "agent.py")

    assert run.returncode == 0, run.stdout + run.stderr
    last_round = [line for line in run.stdout.splitlines() if line.startswith("round ")][-2:]
    assert all(line.endswith(": Correct") for line in last_round), run.stdout
    assert run.stdout.splitlines()[-1] == "every greeting is in the user's language: done"
