"""How to start the project's commands with a given interpreter."""
from __future__ import annotations

from pathlib import Path


def project_command(python: str, script: str, module: str) -> list[str]:
    """The console script `script` installed next to `python`, else `python -m module`.

    The console script is what users run; `-m` covers an interpreter whose
    environment has the project importable but no scripts installed.
    """
    installed = Path(python).parent / script
    if installed.exists():
        return [str(installed)]
    return [python, "-m", module]
