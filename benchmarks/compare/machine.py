"""Where a figure was measured: cores, memory, OS, interpreters, date."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess


def describe(our_python: str, opto_python: str | None) -> dict:
    """The machine and interpreters of this run, for the page."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "system": f"{platform.system()} {platform.machine()}",
        "our_python": interpreter_version(our_python),
        "opto_python": interpreter_version(opto_python) if opto_python else None,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def interpreter_version(python: str) -> str:
    """`python`'s version ("3.11.7"), or "unknown" when it cannot be run."""
    try:
        out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None
