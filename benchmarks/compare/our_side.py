"""Run our programs under `trace-run` (with a private daemon) and collect their figures."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

from benchmarks.compare.commands import project_command
from benchmarks.compare.daemon import PrivateDaemon
from benchmarks.compare.runner import PROGRAMS, RESULT_PREFIX, ProgramFailed, run_program
from benchmarks.compare.sizes import Sizes

PIPELINE_TARGETS = "workload:normalize,workload:add_greeting,workload:count_words"


class OurSide:
    """Our half of every figure. `python` is an interpreter with the project installed."""

    def __init__(self, python: str, sizes: Sizes, llm_env: dict[str, str]):
        # Absolute (programs run in programs/), but not resolved: a venv's python is a symlink whose
        # location, not target, decides which environment (and which trace-run) it is.
        self.python = os.path.abspath(python)
        self.sizes = sizes
        self.llm_env = dict(llm_env)
        self._session_counter = 0

    # -- plumbing ----------------------------------------------------------
    def _session(self, name: str) -> str:
        self._session_counter += 1
        return f"bench-{name}-{os.getpid()}-{self._session_counter}"

    def _trace_run(self, daemon: PrivateDaemon, options: list[str], program: str, *args: object,
                   env: dict[str, str] | None = None) -> dict:
        command = (project_command(self.python, "trace-run", "tracer.cli")
                   + ["--no-autostart", *options, program, *map(str, args)])
        return run_program(command, env=env or daemon.env, timeout=self.sizes.program_timeout_s)

    # -- figures -----------------------------------------------------------
    def call_cost(self) -> dict:
        with PrivateDaemon(self.python, self.llm_env) as daemon:
            return self._trace_run(daemon, ["--session", self._session("call"), "--target", "workload:inc",
                                            "--granularity", "call"],
                                   "ours_call_cost.py", self.sizes.call_burst, self.sizes.repeats,
                                   self.sizes.call_sustained)

    def op_cost(self) -> dict:
        with PrivateDaemon(self.python, self.llm_env) as daemon:
            return self._trace_run(daemon, ["--session", self._session("op"), "--target", "workload:poly",
                                            "--granularity", "op"],
                                   "ours_op_cost.py", self.sizes.op_burst, self.sizes.repeats,
                                   self.sizes.op_sustained)

    def memory(self) -> dict:
        with PrivateDaemon(self.python, self.llm_env) as daemon:
            daemon_before = daemon.rss_bytes()
            result = self._trace_run(daemon, ["--session", self._session("memory"), "--target", "workload:inc"],
                                     "ours_memory.py", *self.sizes.memory_counts_ours)
            after = daemon.rss_bytes()
            if daemon_before is not None and after is not None:
                result["daemon_growth_bytes"] = after - daemon_before
            return result

    def build(self, nodes: int) -> dict:
        """One chain size in its own session; adds the daemon's own time for the step outside the LLM."""
        with PrivateDaemon(self.python, self.llm_env) as daemon:
            session = self._session(f"build{nodes}")
            result = self._trace_run(daemon, ["--session", session, "--target", "workload:advance",
                                              "--param", "workload:START"], "ours_build.py", nodes)
            steps = self.step_records(daemon, session)
            if steps:  # the last one is the measured chain (the first is the program's warm-up)
                last = steps[-1]
                result["daemon_step_s"] = last["step_s"]
                result["daemon_llm_s"] = last["llm_s"]
                result["build_s"] = last["step_s"] - last["llm_s"]
                result["prompt_chars"] = last["prompt_chars"]
            return result

    def step(self, processes: int) -> dict:
        """Step round trips with `processes` processes in one session (1 driver + followers)."""
        with PrivateDaemon(self.python, self.llm_env) as daemon:
            session = self._session(f"step{processes}")
            options = ["--session", session, "--target", PIPELINE_TARGETS, "--param", "workload:GREETING"]
            result = self._run_session(daemon, options, processes)
            # The loopback LLM's share of each step, as the daemon's LLM layer measured it.
            records = self.step_records(daemon, session)[-self.sizes.steps:]  # after the warm-up step
            result["llm_s"] = [s["llm_s"] for s in records]
            return result

    def _run_session(self, daemon: PrivateDaemon, options: list[str], processes: int) -> dict:
        sync_dir = tempfile.mkdtemp(prefix="tlsync-", dir=daemon.directory)
        env = dict(daemon.env, BENCH_SYNC_DIR=sync_dir)
        launcher = project_command(self.python, "trace-run", "tracer.cli") + ["--no-autostart", *options]
        followers = [subprocess.Popen(launcher + ["ours_step.py", "follower", str(self.sizes.steps)],
                                      cwd=PROGRAMS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
                     for _ in range(processes - 1)]
        try:
            driver = self._trace_run(daemon, options, "ours_step.py", "driver", self.sizes.steps,
                                     processes - 1, env=env)
        finally:
            outputs = []
            for follower in followers:
                try:
                    out, _ = follower.communicate(timeout=self.sizes.program_timeout_s)
                except subprocess.TimeoutExpired:
                    follower.kill()
                    out, _ = follower.communicate()
                outputs.append((follower.returncode, out))
        seen = []
        for returncode, out in outputs:
            lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
            if returncode != 0 or not lines:
                raise ProgramFailed(launcher + ["ours_step.py", "follower"], returncode, out)
            seen.append(json.loads(lines[-1][len(RESULT_PREFIX):])["seen"])
        return {"processes": processes, "round_trip_s": round_trips(driver["steps"], seen),
                "driver_step_s": [end - start for start, end, _ in driver["steps"]],
                "tracer": driver.get("tracer")}

    def step_records(self, daemon: PrivateDaemon, session: str) -> list[dict]:
        result = run_program([self.python, "ours_step_records.py", str(daemon.state_dir), session],
                             env=daemon.env, timeout=120)
        return result["steps"]


class PatchNotSeen(RuntimeError):
    """A follower process never saw the value a step patched in."""


def round_trips(driver_steps: list[list], followers_seen: list[list[list]]) -> list[float]:
    """Per step: from `tracer.step()` in the driver until the patch was live in every process.

    `driver_steps` are [start, end, new_value] (monotonic seconds); each
    follower's list holds [time, value] for every change it saw, in order,
    so its k-th change belongs to the k-th step.
    """
    trips = []
    for index, (start, end, value) in enumerate(driver_steps):
        live = end
        for seen in followers_seen:
            if index >= len(seen) or seen[index][1] != value:
                raise PatchNotSeen(f"a follower did not see step {index + 1}'s value {value!r} "
                                   f"(it saw {[v for _, v in seen]})")
            live = max(live, seen[index][0])
        trips.append(live - start)
    return trips
