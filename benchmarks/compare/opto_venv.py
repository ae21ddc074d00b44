"""The comparison's own virtual environment: Microsoft Trace (`trace-opt`) and matplotlib.

opto is never installed into the project's environment. `trace-opt` 0.1.3.8
declares scikit-learn, xgboost, litellm, black and graphviz as dependencies;
only some are imported by `opto.trace` and `OptoPrime`. We install the two
packages opto imports without their declared dependency trees (`--no-deps`)
and then exactly the modules importing them needs, found by importing
`opto.trace` and `opto.optimizers.OptoPrime` in a clean environment until
nothing was missing (scikit-learn and xgboost are never imported;
litellm's cloud SDKs, tokenizers and huggingface-hub are not needed to
import it). Nothing calls the network at run time: litellm is told to use
its bundled model cost map, and OptoPrime's LLM is a loopback server.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

# Installed with --no-deps: the package under comparison and the LLM library it imports at module level.
OPTO_PACKAGES_NO_DEPS = ("trace-opt==0.1.3.8", "litellm==1.109.1")
# What importing opto.trace + OptoPrime (and litellm, which opto imports) needs, with their own dependencies;
# matplotlib is for the plots.
IMPORT_REQUIREMENTS = (
    "graphviz==0.21", "black==26.10.1", "openai==3.52.0", "numpy==2.4.6",
    "python-dotenv==1.2.4", "httpx==0.28.1", "h2==4.4.1", "fastuuid==0.14.0", "tiktoken==0.14.0",
    "aiohttp==3.14.5", "pydantic-settings==2.16.3", "Jinja2==3.1.6", "importlib-metadata==10.2.0",
    "PyYAML==6.0.3", "matplotlib==3.11.2",
)
IMPORT_CHECK = ("import opto.trace; from opto.optimizers import OptoPrime; "
                "import matplotlib; import openai; print(__import__('opto.version').version.__version__)")

# Keep litellm (imported by opto at module level) off the network.
OFFLINE_ENVIRONMENT = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRACE_DEFAULT_LLM_BACKEND": "LiteLLM",
}


class OptoEnvironmentError(RuntimeError):
    """The opto virtual environment could not be created or does not import opto."""


def requirements_stamp() -> str:
    """A hash of the pinned requirements: a venv with another stamp is rebuilt."""
    text = "\n".join(OPTO_PACKAGES_NO_DEPS + IMPORT_REQUIREMENTS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def is_ready(venv: Path) -> bool:
    """True when `venv` exists, was built from the current pins and imports opto."""
    stamp = venv / ".comparison-stamp"
    if not venv_python(venv).exists() or not stamp.exists():
        return False
    return stamp.read_text().strip() == requirements_stamp()


def offline_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for running programs in the opto venv."""
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENVIRONMENT)
    return env


def ensure(venv: Path, base_python: str = sys.executable, log=print) -> Path:
    """Create (or reuse) the opto venv at `venv`; return its interpreter.

    Raises OptoEnvironmentError with pip's output when an install fails.
    """
    python = venv_python(venv)
    if is_ready(venv):
        return python
    log(f"creating the opto environment in {venv} (trace-opt, matplotlib)")
    _run([base_python, "-m", "venv", "--clear", str(venv)], "create the virtual environment")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(pip + ["--no-deps", *OPTO_PACKAGES_NO_DEPS], "install trace-opt and litellm")
    _run(pip + list(IMPORT_REQUIREMENTS), "install what importing opto needs")
    version = _run([str(python), "-c", IMPORT_CHECK], "import opto in the new environment",
                   env=offline_environment())
    (venv / ".comparison-stamp").write_text(requirements_stamp() + "\n")
    log(f"opto {version.strip().splitlines()[-1]} ready in {venv}")
    return python


def opto_version(python: Path) -> str:
    """The installed trace-opt version (from its metadata: importing opto takes seconds)."""
    out = _run([str(python), "-c", "import importlib.metadata as m; print(m.version('trace-opt'))"],
               "read trace-opt's version")
    return out.strip()


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env)
    except OSError as exc:
        raise OptoEnvironmentError(f"could not {what}: cannot run {command[0]}: {exc}") from exc
    if result.returncode != 0:
        raise OptoEnvironmentError(
            f"could not {what} (exit {result.returncode}): {' '.join(command)}\n"
            f"{result.stderr[-3000:]}\nDelete the directory and run again, or check that pip can reach PyPI.")
    return result.stdout
