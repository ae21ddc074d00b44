"""The harness's own parts: the loopback LLM's answers, result lines, round trips, token counts."""
from __future__ import annotations

import json
import sys

import openai
import pytest

from benchmarks.compare import harness, loopback, opto_venv
from benchmarks.compare.daemon import DaemonFailed, PrivateDaemon
from benchmarks.compare.our_side import PatchNotSeen, round_trips
from benchmarks.compare.runner import ProgramFailed, run_program
from benchmarks.compare.tokens import count_tokens

OPTO_STYLE_PROMPT = """#Variables
(type) name=value   <- the system prompt describes the format first

Now you see problem instance:

#Variables
(str) greeting0=Hello
(int) retries=3
(code) __code0:def f(x): return x

#Constraints
(int) retries: retries > 0
"""


def test_loopback_suggests_a_new_value_of_the_same_type_for_each_variable():
    with loopback.start_server() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="loopback")
        reply = client.chat.completions.create(model="bench", messages=[
            {"role": "system", "content": "You are an optimizer."},
            {"role": "user", "content": OPTO_STYLE_PROMPT}])
    answer = json.loads(reply.choices[0].message.content)
    assert answer["suggestion"] == {"greeting0": "Hi there", "retries": 4}


def test_loopback_records_the_prompt_each_system_sent():
    with loopback.start_server() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="loopback")
        client.chat.completions.create(model="bench", messages=[{"role": "user", "content": "#Variables\n(float) w=1.5\n"}])
        assert server.requests[0].prompt_text == "#Variables\n(float) w=1.5\n"


def test_loopback_reads_quoted_and_bare_values_alike():
    # ours prints values as Python literals, opto prints strings bare
    assert loopback.new_value("str", "'Hi there'") == "Hello"
    assert loopback.new_value("str", "Hi there") == "Hello"
    assert loopback.new_value("str", "'Hello'") == "Hi there"
    assert loopback.new_value("float", "1.5") == 2.0
    assert loopback.new_value("bool", "True") is False


def test_variables_are_read_from_the_last_variables_section_only():
    assert loopback.variables_in_prompt(OPTO_STYLE_PROMPT) == {
        "greeting0": ("str", "Hello"), "retries": ("int", "3"), "__code0": ("code", "def f(x): return x")}


def test_run_program_returns_the_last_result_line(tmp_path):
    program = tmp_path / "p.py"
    program.write_text('print("noise"); print("RESULT {\\"a\\": 1}"); print("RESULT {\\"a\\": 2}")\n')
    assert run_program([sys.executable, str(program)], env={}, timeout=30, cwd=tmp_path) == {"a": 2}


def test_failed_program_reports_its_last_words_and_exit_status(tmp_path):
    program = tmp_path / "p.py"
    program.write_text('import sys; print("working"); sys.exit("not traced: inc was not rewritten")\n')
    with pytest.raises(ProgramFailed) as failure:
        run_program([sys.executable, str(program)], env={}, timeout=30, cwd=tmp_path)
    assert failure.value.returncode == 1
    assert "not traced: inc was not rewritten" in failure.value.output


def test_program_without_a_result_line_is_a_failure(tmp_path):
    program = tmp_path / "p.py"
    program.write_text('print("finished, but said nothing")\n')
    with pytest.raises(ProgramFailed, match="exit 0"):
        run_program([sys.executable, str(program)], env={}, timeout=30, cwd=tmp_path)


def test_program_over_its_time_limit_is_stopped_and_reported(tmp_path):
    program = tmp_path / "p.py"
    program.write_text('import time; print("started", flush=True); time.sleep(30)\n')
    with pytest.raises(ProgramFailed, match="timed out"):
        run_program([sys.executable, str(program)], env={}, timeout=0.5, cwd=tmp_path)


def test_round_trip_lasts_until_the_last_process_has_the_patch():
    driver = [[10.0, 10.010, "Hi there"], [20.0, 20.004, "Hello"]]
    followers = [[[10.012, "Hi there"], [20.003, "Hello"]], [[10.020, "Hi there"], [20.006, "Hello"]]]
    assert round_trips(driver, followers) == pytest.approx([0.020, 0.006])


def test_round_trip_refuses_a_follower_that_missed_a_patch():
    with pytest.raises(PatchNotSeen, match="step 2"):
        round_trips([[1.0, 1.1, "a"], [2.0, 2.1, "b"]], [[[1.05, "a"]]])


def test_tokens_are_counted_per_word_number_and_symbol_run():
    # "(" "str" ")" " greeting" "0" "=" "Hello": BPE never merges across these pieces
    assert count_tokens("(str) greeting0=Hello") == 7
    assert count_tokens("") == 0


def test_opto_environment_from_a_missing_interpreter_fails_with_what_to_do(tmp_path):
    with pytest.raises(opto_venv.OptoEnvironmentError, match="could not create the virtual environment"):
        opto_venv.ensure(tmp_path / "venv", base_python=str(tmp_path / "no-such-python"), log=lambda text: None)


def test_an_environment_built_from_other_pins_is_not_reused(tmp_path):
    venv = tmp_path / "venv"
    opto_venv.venv_python(venv).parent.mkdir(parents=True)
    opto_venv.venv_python(venv).write_text("")
    (venv / ".comparison-stamp").write_text("0123456789abcdef\n")
    assert not opto_venv.is_ready(venv)
    (venv / ".comparison-stamp").write_text(opto_venv.requirements_stamp() + "\n")
    assert opto_venv.is_ready(venv)


def test_without_an_opto_environment_every_opto_figure_says_why(tmp_path):
    results = harness.run(harness.Options(our_python=sys.executable, opto_venv=tmp_path / "absent",
                                          install_opto=False, run_ours=False, figures=(), log=lambda text: None))
    reasons = {entry["opto_error"] for entry in results["figures"].values()}
    assert len(reasons) == 1 and f"no opto environment at {tmp_path / 'absent'}" in reasons.pop()


def test_a_daemon_that_cannot_start_is_reported_with_its_output(tmp_path):
    broken_python = tmp_path / "python"
    broken_python.write_text("#!/bin/sh\necho 'optimizer_service: cannot import' >&2\nexit 3\n")
    broken_python.chmod(0o755)
    daemon = PrivateDaemon(str(broken_python), llm_env={})
    with pytest.raises(DaemonFailed, match="exited with 3") as failure:
        daemon.start()
    assert "cannot import" in str(failure.value)
    assert not daemon.directory.exists()  # its temporary socket/state directory is cleaned up
