"""Which optimizer a session's steps call, and how it is constructed.

The daemon constructs one optimizer per session from the session's
configuration (LLM spec, memory size, budgets: whatever StepRequest options
set). The default is OptoPrime (`optimizer_service.optoprime`). Another
implementation of `optimizer_service.step_types.Optimizer` can be plugged
in with ``trace-daemon serve --optimizer MODULE:FACTORY`` or the
``TRACE_OPTIMIZER`` environment variable; tests use this to drive the real
daemon with a scripted optimizer and no LLM.

A factory is called as ``factory(session, config, database)`` and returns an
Optimizer; `database` is the path of the daemon's SQLite file, where the LLM
layer keeps its cache and ledger.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, Final

from optimizer_service.step_types import Optimizer

OPTIMIZER_ENV: Final = "TRACE_OPTIMIZER"

OptimizerFactory = Callable[[str, dict[str, Any], str], Optimizer]


class OptimizerNotFound(RuntimeError):
    """The configured optimizer factory cannot be imported."""


def load_factory(spec: str | None = None) -> OptimizerFactory:
    """The factory named by `spec` (or $TRACE_OPTIMIZER) as ``module:attribute``, else OptoPrime's."""
    spec = spec or os.environ.get(OPTIMIZER_ENV) or None
    if spec is None:
        return optoprime_factory
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise OptimizerNotFound(f"optimizer factory {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise OptimizerNotFound(f"cannot load the optimizer factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise OptimizerNotFound(f"optimizer factory {spec!r} is not callable")
    return factory


def optoprime_factory(session: str, config: dict[str, Any], database: str) -> Optimizer:
    """OptoPrime with the session's LLM configuration, keeping its LLM ledger in `database`."""
    try:
        # Imported lazily: the SDKs make daemon start-up slow, and a session
        # that never steps never needs them.
        from optimizer_service.optoprime import create_optimizer  # type: ignore[attr-defined]
    except ImportError as exc:
        raise OptimizerNotFound(f"OptoPrime is not available in this installation: {exc}") from exc
    return create_optimizer(session=session, config=config, database=database)
