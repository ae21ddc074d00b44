"""The marking configuration: sources, precedence, validation, and the round trip to child processes."""
from __future__ import annotations

import os
import textwrap

import pytest

from tracer.config import (
    BOOTSTRAP_DIR,
    ConfigError,
    TraceConfig,
    child_environ,
    find_pyproject,
    resolve,
    untraced_environ,
)


def write_pyproject(directory, body: str) -> str:
    path = os.path.join(directory, "pyproject.toml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(body))
    return path


def test_defaults_trace_nothing_at_call_granularity(tmp_path):
    config = resolve({}, environ={}, start_dir=tmp_path)
    assert config.targets == () and config.trainable == () and config.params == ()
    assert config.granularity == "call"
    assert config.autostart is True and config.in_process is False
    assert config.marked_modules() == frozenset()


def test_pyproject_table_is_read_from_the_nearest_parent(tmp_path):
    write_pyproject(tmp_path, """
        [tool.trace]
        session = "qa"
        targets = ["app.agent:*", "__main__:main"]
        trainable = ["app.prompts:build"]
        params = ["app.prompts:SYSTEM"]
        granularity = "op"
        llm = "openai:gpt-4o-mini"
        in-process = true
        autostart = false
    """)
    nested = tmp_path / "src" / "app"
    nested.mkdir(parents=True)
    config = resolve({}, environ={}, start_dir=nested)
    assert config.session == "qa"
    assert config.targets == ("app.agent:*", "__main__:main")
    assert config.trainable == ("app.prompts:build",)
    assert config.params == ("app.prompts:SYSTEM",)
    assert (config.granularity, config.llm, config.in_process, config.autostart) == ("op", "openai:gpt-4o-mini", True, False)
    assert "pyproject.toml" in config.origins["session"]


def test_pyproject_without_a_trace_table_is_ignored(tmp_path):
    write_pyproject(tmp_path, """
        [project]
        name = "x"
    """)
    assert resolve({}, environ={}, start_dir=tmp_path) == TraceConfig()


def test_environment_overrides_pyproject_and_flags_override_environment(tmp_path):
    write_pyproject(tmp_path, """
        [tool.trace]
        session = "from-file"
        granularity = "op"
        llm = "openai:a"
    """)
    config = resolve(
        {"session": "from-flag"},
        environ={"TRACE_SESSION": "from-env", "TRACE_GRANULARITY": "call"},
        start_dir=tmp_path,
    )
    assert config.session == "from-flag"
    assert config.granularity == "call"
    assert config.llm == "openai:a"
    assert config.origins["granularity"] == "environment"
    assert config.origins["session"] == "command line"


def test_lists_are_joined_across_sources_without_duplicates(tmp_path):
    write_pyproject(tmp_path, """
        [tool.trace]
        targets = ["a:f", "b:g"]
    """)
    config = resolve({"targets": ["c:h", "a:f"]}, environ={"TRACE_TARGETS": "b:g, d:*"}, start_dir=tmp_path)
    assert config.targets == ("a:f", "b:g", "d:*", "c:h")


def test_flag_values_may_be_comma_separated():
    config = resolve({"targets": ["m:f,m:C.g"], "trainable": ["m:h"]}, environ={}, start_dir="/")
    assert config.targets == ("m:f", "m:C.g")
    assert config.trainable == ("m:h",)


def test_environment_booleans_accept_common_spellings():
    assert resolve({}, environ={"TRACE_IN_PROCESS": "yes", "TRACE_AUTOSTART": "off"}, start_dir="/").in_process is True
    assert resolve({}, environ={"TRACE_AUTOSTART": "0"}, start_dir="/").autostart is False


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"targets": ["no_colon"]}, "expected MOD:QUALNAME"),
        ({"targets": ["mod:"]}, "is not a valid name"),
        ({"targets": ["1mod:f"]}, "expected MOD:QUALNAME"),
        ({"trainable": ["mod:f-g"]}, "is not a valid name"),
        ({"params": ["mod:*"]}, "expected MOD:NAME"),
        ({"granularity": "line"}, "granularity must be 'call' or 'op'"),
        ({"llm": "gpt-4o"}, "PROVIDER:MODEL"),
        ({"session": "  "}, "session name"),
        ({"targets": ["tracer.hooks:*"]}, "cannot trace its own code"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_problem(flags, message):
    with pytest.raises(ConfigError, match=message):
        resolve(flags, environ={}, start_dir="/")


def test_invalid_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="TRACE_IN_PROCESS"):
        resolve({}, environ={"TRACE_IN_PROCESS": "maybe"}, start_dir="/")


def test_bad_target_in_pyproject_names_the_file(tmp_path):
    path = write_pyproject(tmp_path, """
        [tool.trace]
        targets = ["nocolon"]
    """)
    with pytest.raises(ConfigError, match=str(path).replace(".", r"\.")):
        resolve({}, environ={}, start_dir=tmp_path)


def test_unknown_pyproject_key_is_rejected_with_the_known_keys(tmp_path):
    write_pyproject(tmp_path, """
        [tool.trace]
        target = ["a:f"]
    """)
    with pytest.raises(ConfigError, match="unknown key 'target'.*targets"):
        resolve({}, environ={}, start_dir=tmp_path)


def test_malformed_pyproject_raises_config_error(tmp_path):
    write_pyproject(tmp_path, """
        [tool.trace]
        targets = ["a:f"
    """)
    with pytest.raises(ConfigError, match="cannot parse as TOML"):
        resolve({}, environ={}, start_dir=tmp_path)


def test_wrongly_typed_pyproject_value_is_rejected(tmp_path):
    write_pyproject(tmp_path, """
        [tool.trace]
        autostart = "no"
    """)
    with pytest.raises(ConfigError, match="autostart must be true or false"):
        resolve({}, environ={}, start_dir=tmp_path)


def test_find_pyproject_returns_none_when_there_is_none(tmp_path):
    # tmp_path's parents may hold one (e.g. a checkout), so only assert on a found file's location
    found = find_pyproject(tmp_path)
    assert found is None or not found.startswith(str(tmp_path))


def test_config_round_trips_through_the_environment():
    config = resolve(
        {
            "session": "s1",
            "targets": ["a:f", "__main__:*"],
            "trainable": ["a:g"],
            "params": ["a:X", "a:C.y"],
            "granularity": "op",
            "llm": "anthropic:claude",
            "in_process": True,
            "autostart": False,
        },
        environ={},
        start_dir="/",
    )
    assert TraceConfig.from_environ(config.to_environ()) == config


def test_stable_hash_ignores_order_and_changes_with_marking():
    one = TraceConfig(targets=("a:f", "b:g"))
    assert one.stable_hash() == TraceConfig(targets=("b:g", "a:f")).stable_hash()
    assert one.stable_hash() != TraceConfig(targets=("a:f",)).stable_hash()
    assert one.stable_hash() != TraceConfig(targets=("a:f", "b:g"), granularity="op").stable_hash()
    assert one.stable_hash() == TraceConfig(targets=("a:f", "b:g"), session="other").stable_hash()


def test_marks_for_a_module_combine_targets_trainable_and_wildcards():
    config = TraceConfig(targets=("m:f", "m:C.g", "other:h"), trainable=("m:C.g", "w:*"))
    marks = config.marks_for("m")
    assert marks.trainable("f") is False
    assert marks.trainable("C.g") is True
    assert marks.trainable("h") is None
    wildcard = config.marks_for("w")
    assert wildcard.trainable("anything") is True and wildcard.trainable("C.method") is True
    assert wildcard.trainable("f.<locals>.inner") is None
    assert config.marks_for("unmarked") is None


def test_marks_for_main_also_match_the_real_module_name_of_dash_m():
    config = TraceConfig(targets=("pkg.cli:run", "__main__:main"))
    marks = config.marks_for("__main__", "pkg.cli")
    assert marks.trainable("run") is False and marks.trainable("main") is False


def test_child_environ_puts_bootstrap_first_and_carries_the_config():
    config = TraceConfig(targets=("a:f",), session="s")
    env = child_environ(config, {"PYTHONPATH": "/user/lib", "HOME": "/h"})
    assert env["PYTHONPATH"].split(os.pathsep) == [BOOTSTRAP_DIR, "/user/lib"]
    assert env["TRACE_TARGETS"] == "a:f" and env["TRACE_SESSION"] == "s"
    assert env["HOME"] == "/h"
    assert os.path.isfile(os.path.join(BOOTSTRAP_DIR, "sitecustomize.py"))


def test_untraced_environ_removes_bootstrap_and_marking_but_keeps_daemon_location():
    env = child_environ(TraceConfig(targets=("a:f",)), {"PYTHONPATH": "/user/lib", "TRACE_DAEMON_SOCKET": "/s"})
    clean = untraced_environ(env)
    assert clean["PYTHONPATH"] == "/user/lib"
    assert "TRACE_TARGETS" not in clean
    assert clean["TRACE_DAEMON_SOCKET"] == "/s"
