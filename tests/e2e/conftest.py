"""Fixtures of the closing-the-loop tests: a loopback LLM and a real daemon in a temporary directory."""
from __future__ import annotations

import pytest

from tests.e2e.helpers import LoopEnv, new_loop_env


@pytest.fixture
def loop_env() -> LoopEnv:
    """The loopback LLM and a private daemon location, no daemon started; everything stopped afterwards."""
    env = new_loop_env()
    try:
        yield env
    finally:
        env.cleanup()


@pytest.fixture
def loop(loop_env: LoopEnv) -> LoopEnv:
    """`loop_env` with `trace-daemon serve` running on it."""
    loop_env.start_daemon()
    return loop_env


@pytest.fixture
def project(tmp_path):
    """A directory for the test's program files."""
    directory = tmp_path / "project"
    directory.mkdir()
    return directory
