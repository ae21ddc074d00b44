"""CPython's own test suites for pure-Python stdlib modules pass with every function of the module traced.

Each case runs `trace-run --granularity call|op --target MOD:* driver.py` in a
subprocess (op mode rewrites every operation, the harder case); the driver
runs the module's tests from the interpreter's own `test` package with
unittest, then reports which functions of the module were instrumented. A case
passes only if the tests pass AND every function and method defined in the
module was instrumented, so it cannot pass by tracing nothing.

The rewritten stdlib code is cached under a temporary PYTHONPYCACHEPREFIX, so
nothing is written into the interpreter's installation.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

TRACE_RUN = os.path.join(os.path.dirname(sys.executable), "trace-run")

DRIVER = '''\
import importlib, json, sys, types, unittest

module_names, test_names, where = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
suite = unittest.defaultTestLoader.loadTestsFromNames(test_names)
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=0).run(suite)

def functions(namespace, module_name, prefix=""):
    for name, value in list(vars(namespace).items()):
        qualname = prefix + name
        if isinstance(value, type) and value.__module__ == module_name and value.__qualname__ == qualname:
            yield from functions(value, module_name, qualname + ".")
            continue
        for func in (value, getattr(value, "__func__", None), getattr(value, "fget", None), getattr(value, "fset", None)):
            if isinstance(func, types.FunctionType) and func.__module__ == module_name and func.__qualname__ == qualname:
                yield qualname, func

def instrumented(func):
    return any(n.startswith("__@trace_") for n in func.__code__.co_names)

found = {}
for module_name in module_names:
    # the module object under test: sys.modules, or a fresh copy the test module holds (py_heapq)
    holder, _, attribute = where.rpartition(":")
    module = getattr(importlib.import_module(holder), attribute) if holder else sys.modules[module_name]
    found.update((f"{module_name}:{q}", f) for q, f in functions(module, module_name))
print(json.dumps({
    "ok": result.wasSuccessful(),
    "run": result.testsRun,
    "functions": len(found),
    "untraced": sorted(q for q, f in found.items() if not instrumented(f)),
}))
'''

# (module traced, its CPython test module, where the traced module object lives after the tests)
SUITES = [
    ("textwrap", "test.test_textwrap", ""),
    ("shlex", "test.test_shlex", ""),
    ("colorsys", "test.test_colorsys", ""),
    ("fnmatch", "test.test_fnmatch", ""),
    ("string", "test.test_string", ""),
    ("heapq", "test.test_heapq", "test.test_heapq:py_heapq"),
    ("bisect", "test.test_bisect", "test.test_bisect:py_bisect"),
    ("difflib", "test.test_difflib", ""),
    ("fractions", "test.test_fractions", ""),
    ("graphlib", "test.test_graphlib", ""),
    ("html", "test.test_html", ""),
    ("pprint", "test.test_pprint", ""),
    ("reprlib", "test.test_reprlib", ""),
    ("base64", "test.test_base64", ""),
    ("glob", "test.test_glob", ""),
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stdlib-driver")
    path = directory / "run_suite.py"
    path.write_text(DRIVER)
    return path


# op mode rewrites every operation: the harder case, run on the smaller modules to keep this file near a minute
OP_MODE = {"textwrap", "shlex", "colorsys", "fnmatch", "string", "heapq", "bisect", "graphlib", "html"}
CASES = [(*suite, "call") for suite in SUITES] + [(*suite, "op") for suite in SUITES if suite[0] in OP_MODE]
# A package and its submodules; its suite also runs `python -m json.tool` children, which are traced too.
# In-process optimizer, so the children connect to it and print nothing on stderr (the suite checks that).
# (test_unicode is left out: 65k round trips of single characters, seconds of tracing for nothing new)
JSON_TESTS = ["decode", "default", "dump", "encode_basestring_ascii", "fail", "float", "indent", "pass1", "pass2",
              "pass3", "recursion", "scanstring", "separators", "speedups", "tool"]
CASES.append(("json,json.decoder,json.encoder,json.scanner", ",".join(f"test.test_json.test_{t}" for t in JSON_TESTS),
              "", "call"))


@pytest.mark.parametrize("module_name, test_module, where, granularity", CASES,
                         ids=[f"{c[0].split(',')[0]}-{c[3]}" for c in CASES])
def test_cpython_suite_passes_with_the_module_traced(driver, tmp_path, module_name, test_module, where, granularity):
    for name in test_module.split(","):
        if importlib.util.find_spec(name) is None:
            pytest.fail(f"{name} is not shipped with this interpreter ({sys.version.split()[0]})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_DAEMON_SOCKET=str(tmp_path / "no-daemon" / "sock"),
        TRACE_STATE_DIR=str(tmp_path / "state"),
        PYTHONPYCACHEPREFIX=str(tmp_path / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    targets = [arg for name in module_name.split(",") for arg in ("--target", f"{name}:*")]
    mode = ["--in-process"] if "," in module_name else ["--no-autostart"]
    proc = subprocess.run(
        [TRACE_RUN, *mode, "--granularity", granularity, *targets, str(driver), module_name, test_module, where],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["ok"], proc.stderr[-4000:]
    assert report["run"] > 0
    assert report["functions"] > 0
    assert report["untraced"] == [], f"functions of {module_name} left uninstrumented: {report['untraced']}"
