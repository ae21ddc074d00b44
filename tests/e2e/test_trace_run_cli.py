"""`trace-run`'s command line: its own options end where the program begins."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracer.cli import UsageError, split_command_line

TRACE_RUN = os.path.join(os.path.dirname(sys.executable), "trace-run")


def test_options_before_the_script_are_trace_runs_and_the_rest_the_programs():
    options, script, module, args = split_command_line(
        ["--target", "a:f", "--in-process", "app.py", "--target", "x", "-m", "y"]
    )
    assert options == ["--target", "a:f", "--in-process"]
    assert (script, module) == ("app.py", None)
    assert args == ["--target", "x", "-m", "y"]


def test_dash_m_takes_the_next_word_as_the_module():
    options, script, module, args = split_command_line(["--session", "s", "-m", "pkg.tool", "--verbose", "file"])
    assert options == ["--session", "s"]
    assert (script, module, args) == (None, "pkg.tool", ["--verbose", "file"])


def test_dash_m_glued_to_the_module_name_works_like_python():
    assert split_command_line(["-mpkg.tool", "x"]) == ([], None, "pkg.tool", ["x"])


def test_double_dash_ends_the_options():
    assert split_command_line(["--granularity", "op", "--", "--weird-name.py", "a"]) == (
        ["--granularity", "op"], "--weird-name.py", None, ["a"])


def test_option_values_that_look_like_scripts_are_not_the_script():
    options, script, _, _ = split_command_line(["--llm", "openai:gpt-4o-mini", "--param", "m:X", "run.py"])
    assert options == ["--llm", "openai:gpt-4o-mini", "--param", "m:X"]
    assert script == "run.py"


@pytest.mark.parametrize("argv, message", [(["-m"], "-m needs a module name"), (["--target"], "--target needs a value")])
def test_missing_values_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        split_command_line(argv)


def test_no_program_is_a_usage_error_with_status_2(tmp_path):
    result = subprocess.run([TRACE_RUN, "--target", "a:f"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "no program to run" in result.stderr


def test_help_describes_the_options(tmp_path):
    result = subprocess.run([TRACE_RUN, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--target", "--trainable", "--param", "--granularity", "--llm", "--in-process", "--no-autostart", "-m"):
        assert option in result.stdout
