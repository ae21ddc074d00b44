"""Run one measurement program in a subprocess and read its RESULT line."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

PROGRAMS = Path(__file__).resolve().parent / "programs"
RESULT_PREFIX = "RESULT "  # the line programs/measure.py:emit prints


class ProgramFailed(RuntimeError):
    """A measurement program exited with an error or printed no result."""

    def __init__(self, command: list[str], returncode: int | None, output: str):
        self.command = command
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-15:])
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{' '.join(command)} ({status}):\n{tail}")


def run_program(command: list[str], *, env: dict[str, str], timeout: float,
                cwd: Path = PROGRAMS) -> dict:
    """Run `command` (which ends in a program under programs/); return its result dict.

    Raises ProgramFailed when it exits non-zero, times out or prints no
    `RESULT` line; the exception carries the end of its output.
    """
    try:
        completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                                   timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        output = _text(expired.stdout) + _text(expired.stderr)
        raise ProgramFailed(command, None, output) from None
    output = completed.stdout + completed.stderr
    results = [line[len(RESULT_PREFIX):] for line in completed.stdout.splitlines()
               if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not results:
        raise ProgramFailed(command, completed.returncode, output)
    return json.loads(results[-1])


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
