"""Fixtures shared by the tracer tests."""
from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap

import pytest

_counter = itertools.count()


@pytest.fixture
def load(tmp_path):
    """load(source, stem="mod"): import `source` as a fresh module with a unique name; returns the module."""
    def load_module(source: str, stem: str = "mod"):
        name = f"tmod_{stem}_{next(_counter)}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    yield load_module
