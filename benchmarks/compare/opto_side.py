"""Run opto's programs (in the opto virtual environment) and collect their figures."""
from __future__ import annotations

import os
from pathlib import Path

from benchmarks.compare import opto_venv
from benchmarks.compare.runner import run_program
from benchmarks.compare.sizes import Sizes


class OptoSide:
    """opto's half of every figure. `python` is the opto venv's interpreter."""

    def __init__(self, python: Path, sizes: Sizes, llm_env: dict[str, str]):
        self.python = os.path.abspath(python)  # programs run in programs/: no relative paths
        self.sizes = sizes
        self.env = opto_venv.offline_environment()
        self.env.update(llm_env)

    def _run(self, program: str, *args: object) -> dict:
        return run_program([self.python, program, *map(str, args)], env=self.env,
                           timeout=self.sizes.program_timeout_s)

    def call_cost(self) -> dict:
        return self._run("opto_call_cost.py", self.sizes.call_burst, self.sizes.repeats, self.sizes.call_sustained)

    def op_cost(self) -> dict:
        return self._run("opto_op_cost.py", self.sizes.op_burst, self.sizes.repeats, self.sizes.op_sustained)

    def memory(self) -> dict:
        return self._run("opto_memory.py", *self.sizes.memory_counts_opto)

    def build(self, nodes: int) -> dict:
        """One chain size per process: opto's global graph would otherwise carry over."""
        return self._run("opto_build.py", nodes)

    def step(self) -> dict:
        result = self._run("opto_step.py", self.sizes.steps)
        if not result["changed"]:
            raise NothingChanged(f"opto's steps left {result['parameter']} at {result['final_value']!r}: "
                                 "no update to time")
        return result


class NothingChanged(RuntimeError):
    """A step ran but the parameter kept its value, so there was no update to time."""
