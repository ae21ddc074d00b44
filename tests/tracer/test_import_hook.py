"""The import hook: rewrites only marked code, caches it like pytest does, and never gets in the way.

Every test runs a fresh interpreter (an import hook test in the pytest
process would see modules pytest already imported), on a throwaway project
in a temporary directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

MODULE_SOURCE = '''\
import functools

RATE = 0.5

def double(x):
    return x * 2

def untouched(x):
    return x + 1

class Greeter:
    greeting = "hi"

    def greet(self, name):
        return f"hi {name}"

    @staticmethod
    def shout(text):
        return text.upper()

    @property
    def kind(self):
        return "greeter"
'''

# Runs in the child: install the hook for TARGETS, import `shop`, report what happened.
DRIVER = '''\
import json, sys, types, warnings
sys.path.insert(0, {project!r})
warnings.simplefilter("always")
from tracer import config, import_hook
{before}
cfg = config.resolve({{"targets": {targets!r}, "granularity": {granularity!r}}}, environ={{}}, start_dir={project!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import_hook.install(cfg)
    import shop

def instrumented(func):
    return any(name.startswith("__@trace_") for name in func.__code__.co_names)

print(json.dumps({{
    "double": instrumented(shop.double),
    "untouched": instrumented(shop.untouched),
    "greet": instrumented(shop.Greeter.greet),
    "shout": instrumented(shop.Greeter.shout),
    "kind": instrumented(shop.Greeter.kind.fget),
    "results": [shop.double(21), shop.untouched(1), shop.Greeter().greet("bo"), shop.Greeter.shout("a"), shop.Greeter().kind],
    "rewrites": import_hook.stats.rewrites,
    "cache_hits": import_hook.stats.cache_hits,
    "cache_writes": import_hook.stats.cache_writes,
    "cache_write_failures": import_hook.stats.cache_write_failures,
    "failures": import_hook.stats.failures,
    "loader": type(shop.__spec__.loader).__name__,
    "warnings": [f"{{w.category.__name__}}: {{w.message}}" for w in caught],
}}))
'''


def child_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["TRACE_DAEMON_SOCKET"] = str(tmp_path / "daemon.sock")
    env["TRACE_STATE_DIR"] = str(tmp_path / "state")
    env.update(extra)
    return env


@pytest.fixture
def project(tmp_path):
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "shop.py").write_text(MODULE_SOURCE)
    return directory


def run_driver(project, targets, *, granularity="call", before="", env=None, preexec_fn=None, tmp_path=None) -> dict:
    code = DRIVER.format(project=str(project), targets=targets, granularity=granularity, before=before)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env or child_env(tmp_path or project.parent),
        preexec_fn=preexec_fn,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def cache_files(project) -> list[str]:
    pycache = project / "__pycache__"
    if not pycache.is_dir():
        return []
    return sorted(name for name in os.listdir(pycache) if "-trace" in name)


EXPECTED_RESULTS = [42, 2, "hi bo", "A", "greeter"]


def test_marked_functions_are_instrumented_and_behave_the_same(project):
    report = run_driver(project, ["shop:double", "shop:Greeter.greet"])
    assert report["double"] and report["greet"]
    assert not report["untouched"] and not report["shout"] and not report["kind"]
    assert report["results"] == EXPECTED_RESULTS
    assert report["loader"] == "TraceLoader"
    assert report["failures"] == []


def test_wildcard_marks_every_function_and_method_of_the_module(project):
    report = run_driver(project, ["shop:*"])
    assert all(report[name] for name in ("double", "untouched", "greet", "shout", "kind"))
    assert report["results"] == EXPECTED_RESULTS


def test_first_import_rewrites_and_writes_the_cache(project):
    report = run_driver(project, ["shop:double"])
    assert (report["rewrites"], report["cache_hits"], report["cache_writes"]) == (1, 0, 1)
    assert cache_files(project) == [f"shop.{sys.implementation.cache_tag}-trace1.pyc"]


def test_second_import_is_served_from_the_cache_without_rewriting(project):
    run_driver(project, ["shop:double"])
    report = run_driver(project, ["shop:double"])
    assert (report["rewrites"], report["cache_hits"], report["cache_writes"]) == (0, 1, 0)
    assert report["double"] and not report["untouched"]
    assert report["results"] == EXPECTED_RESULTS


def test_normal_pyc_of_the_module_is_never_the_rewritten_one(project):
    run_driver(project, ["shop:double"])
    # a plain import afterwards (no hook) must get plain code, not the cached rewritten module
    code = f"import sys; sys.path.insert(0, {str(project)!r}); import shop; print(any(n.startswith('__@trace_') for n in shop.double.__code__.co_names))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent), check=True)
    assert out.stdout.strip() == "False"


def test_changing_the_marked_targets_invalidates_the_cache(project):
    run_driver(project, ["shop:double"])
    report = run_driver(project, ["shop:double", "shop:untouched"])
    assert report["rewrites"] == 1 and report["cache_hits"] == 0
    assert report["untouched"]


def test_changing_the_granularity_invalidates_the_cache(project):
    run_driver(project, ["shop:double"])
    report = run_driver(project, ["shop:double"], granularity="op")
    assert report["rewrites"] == 1 and report["cache_hits"] == 0


def test_a_different_tracer_version_invalidates_the_cache(project):
    run_driver(project, ["shop:double"])
    # what an upgraded or edited rewriter looks like to the cache: another fingerprint
    report = run_driver(project, ["shop:double"], before="import_hook._fingerprint = bytes(16)")
    assert report["rewrites"] == 1 and report["cache_hits"] == 0


def test_editing_the_source_invalidates_the_cache(project):
    run_driver(project, ["shop:double"])
    (project / "shop.py").write_text(MODULE_SOURCE.replace("x * 2", "x * 2 + 0"))
    report = run_driver(project, ["shop:double"])
    assert report["rewrites"] == 1
    assert report["results"] == EXPECTED_RESULTS


def test_touching_the_source_with_the_same_size_invalidates_the_cache(project):
    run_driver(project, ["shop:double"])
    source = project / "shop.py"
    source.write_text(MODULE_SOURCE.replace("x * 2", "x * 3"))  # same size
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    report = run_driver(project, ["shop:double"])
    assert report["rewrites"] == 1
    assert report["results"][0] == 63


def test_corrupt_cache_file_is_rewritten_not_trusted(project):
    run_driver(project, ["shop:double"])
    cache = project / "__pycache__" / cache_files(project)[0]
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])
    report = run_driver(project, ["shop:double"])
    assert report["rewrites"] == 1 and report["results"] == EXPECTED_RESULTS
    assert run_driver(project, ["shop:double"])["cache_hits"] == 1


def test_processes_racing_on_a_cold_cache_all_import_and_leave_a_valid_cache(project):
    code = DRIVER.format(project=str(project), targets=["shop:*"], granularity="call", before="")
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env(project.parent))
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    assert all(json.loads(out.splitlines()[-1])["results"] == EXPECTED_RESULTS for out, _ in outputs)
    assert sorted(os.listdir(project / "__pycache__")) == [f"shop.{sys.implementation.cache_tag}-trace1.pyc"]  # no temp files left
    assert run_driver(project, ["shop:*"])["cache_hits"] == 1


def _drop_dac_override():
    # As root, permission bits do not stop writes; drop CAP_DAC_OVERRIDE so a 0555 directory is truly read-only.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _read_only_preexec():
    """What makes a 0555 directory read-only for the child: nothing, or (as root) dropping CAP_DAC_OVERRIDE."""
    if os.geteuid() != 0:
        return None
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_dac_override, check=True, timeout=30)
    except (subprocess.SubprocessError, OSError):
        pytest.skip("running as root without the capability to drop CAP_DAC_OVERRIDE: cannot make a read-only directory")
    return _drop_dac_override


def test_read_only_directory_imports_without_a_cache(project, tmp_path):
    preexec = _read_only_preexec()
    os.chmod(project, 0o555)
    try:
        report = run_driver(project, ["shop:double"], preexec_fn=preexec, tmp_path=tmp_path)
    finally:
        os.chmod(project, 0o755)
    assert report["double"] and report["results"] == EXPECTED_RESULTS
    assert report["cache_writes"] == 0 and report["cache_write_failures"] == 1
    assert report["warnings"] == []
    assert cache_files(project) == []


def test_unusable_pycache_location_imports_without_a_cache(project, tmp_path):
    (project / "__pycache__").write_text("a file where the cache directory would go")
    report = run_driver(project, ["shop:double"], tmp_path=tmp_path)
    assert report["double"] and report["results"] == EXPECTED_RESULTS
    assert report["cache_writes"] == 0 and report["cache_write_failures"] == 1
    assert report["warnings"] == []


def test_dont_write_bytecode_is_respected(project, tmp_path):
    env = child_env(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    report = run_driver(project, ["shop:double"], env=env)
    assert report["double"] and report["cache_writes"] == 0
    assert cache_files(project) == []
    assert run_driver(project, ["shop:double"], env=env)["rewrites"] == 1


def test_module_imported_before_the_hook_is_instrumented_in_place_with_one_warning(project):
    report = run_driver(project, ["shop:double", "shop:Greeter.greet"], before="import shop")
    assert report["double"] and report["greet"] and not report["untouched"]
    assert report["results"] == EXPECTED_RESULTS
    assert report["rewrites"] == 0
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith("ImportedBeforeHookWarning: tracer: module 'shop' was already imported")


def test_unmarked_module_is_imported_by_the_normal_machinery(project):
    (project / "other.py").write_text("def f(x):\n    return x + 1\n")
    code = textwrap.dedent(f"""
        import sys, importlib.machinery
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(targets=("shop:double",)))
        import other
        with open(other.__file__) as f:
            plain = compile(f.read(), other.__file__, "exec", dont_inherit=True)
        plain_f = [c for c in plain.co_consts if getattr(c, "co_name", "") == "f"][0]
        print(type(other.__spec__.loader) is importlib.machinery.SourceFileLoader, other.f.__code__ == plain_f,
              import_hook.stats.rewrites)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "0"]


def test_unmarked_functions_of_a_marked_module_keep_their_original_code(project):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(targets=("shop:double",)))
        import shop
        with open(shop.__file__) as f:
            plain = compile(f.read(), shop.__file__, "exec", dont_inherit=True)
        plain_untouched = [c for c in plain.co_consts if getattr(c, "co_name", "") == "untouched"][0]
        print(shop.untouched.__code__ == plain_untouched)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_marked_functions_are_registered_with_the_marking_registry(project):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook, marking, ids
        import_hook.install(config.TraceConfig(targets=("shop:double",), trainable=("shop:Greeter.greet",)))
        import shop
        double = marking.registry.get(ids.function_id("shop", "double"))
        greet = marking.registry.get(ids.function_id("shop", "Greeter.greet"))
        print(double.function() is shop.double, double.trainable, greet.trainable,
              ids.function_id("shop", "untouched") in marking.registry)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True", "False"]


def test_functions_served_from_the_cache_are_registered_like_rewritten_ones(project):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook, marking, ids
        import_hook.install(config.TraceConfig(targets=("shop:double", "shop:Greeter.greet"), granularity="op"))
        import shop
        entries = [marking.registry.get(ids.function_id("shop", q)) for q in ("double", "Greeter.greet")]
        print(import_hook.stats.cache_hits, [e.function() is not None for e in entries], [len(e.sites) for e in entries])
    """)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent)) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    first, second = (r.stdout.split(" ", 1) for r in runs)
    assert (first[0], second[0]) == ("0", "1")
    assert second[1] == first[1]  # same functions bound, same op-mode sites known
    assert "[True, True]" in second[1]


def test_config_params_are_declared_when_their_module_is_imported(project):
    code = textwrap.dedent(f"""
        import sys, warnings
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook, params
        import_hook.install(config.TraceConfig(params=("shop:RATE", "shop:Greeter.greeting")))
        import shop
        rate, greeting = params.registry.by_name["shop.RATE"], params.registry.by_name["Greeter.greeting"]
        print(rate.kind, rate.get(), greeting.kind, greeting.get())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["global", "0.5", "class_attr", "hi"]


# A module whose own import-time code uses its parameters right after assigning them.
USES_PARAMS_AT_IMPORT = '''\
from tracer import params

RATE = 0.5
DECLARED_AT_ASSIGNMENT = params.registry.get("pricing.RATE") is not None
DOUBLED = RATE * 2


class Greeter:
    greeting = "hi"


GREETING = Greeter.greeting + "!"
'''

# Runs in the child: a catch-up patch deferred before the import, as a process joining a session has it.
DEFERRED_DRIVER = '''\
import json, sys, warnings
sys.path.insert(0, {project!r})
from tracer import config, import_hook, params
params.registry.deferred.update({deferred!r})
params.registry.deferred_sources.update({sources!r})
import_hook.install(config.TraceConfig(params={specs!r}, trainable={trainable!r}))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import pricing
{after}
print(json.dumps({{
    "values": [getattr(pricing, name, None) for name in ("RATE", "DOUBLED", "GREETING", "DECLARED_AT_ASSIGNMENT")],
    "import_time_total": getattr(pricing, "IMPORT_TIME_TOTAL", None),
    "source_errors": params.registry.deferred_source_errors,
    "records": {{r.name: [r.get(), r.version, r.patched] for r in params.registry.records() if r.kind != "source"}},
    "rewrites": import_hook.stats.rewrites,
    "cache_hits": import_hook.stats.cache_hits,
    "failures": import_hook.stats.failures,
    "warnings": [f"{{w.category.__name__}}: {{w.message}}" for w in caught],
}}, default=repr))
'''


def run_deferred_driver(project, *, deferred=None, sources=None, specs=("pricing:RATE",), trainable=(), after="") -> dict:
    code = DEFERRED_DRIVER.format(project=str(project), deferred=deferred or {}, sources=sources or {},
                                  specs=tuple(specs), trainable=tuple(trainable), after=after)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(project.parent), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def pricing_project(project):
    (project / "pricing.py").write_text(USES_PARAMS_AT_IMPORT)
    return project


def test_a_deferred_param_value_is_in_place_for_the_modules_next_line(pricing_project):
    report = run_deferred_driver(pricing_project, deferred={"pricing.RATE": (4, 0.75)})
    assert report["values"][:2] == [0.75, 1.5]
    assert report["records"]["pricing.RATE"] == [0.75, 4, True]


def test_a_config_param_is_declared_at_its_assignment_not_after_the_module_ran(pricing_project):
    report = run_deferred_driver(pricing_project)
    assert report["values"] == [0.5, 1.0, "hi!", True]


def test_a_deferred_class_attribute_is_in_place_once_its_class_is_defined(pricing_project):
    report = run_deferred_driver(pricing_project, deferred={"Greeter.greeting": (2, "hello")},
                                 specs=("pricing:Greeter.greeting",))
    assert report["values"][2] == "hello!"
    assert report["records"]["Greeter.greeting"] == ["hello", 2, True]


def test_a_module_named_only_by_a_param_is_cached_under_its_own_tag(pricing_project):
    first = run_deferred_driver(pricing_project)
    second = run_deferred_driver(pricing_project, deferred={"pricing.RATE": (1, 0.25)})
    assert (first["rewrites"], first["cache_hits"]) == (1, 0)
    assert (second["rewrites"], second["cache_hits"]) == (0, 1)
    assert second["values"][:2] == [0.25, 0.5]  # the cached code still declares at the assignment
    assert cache_files(pricing_project) and all("pricing" in name for name in cache_files(pricing_project))


def test_changing_the_params_of_a_module_invalidates_its_cache(pricing_project):
    run_deferred_driver(pricing_project)
    report = run_deferred_driver(pricing_project, specs=("pricing:RATE", "pricing:Greeter.greeting"),
                                 deferred={"Greeter.greeting": (1, "hey")})
    assert (report["rewrites"], report["cache_hits"]) == (1, 0)
    assert report["values"][2] == "hey!"


def test_a_param_assigned_again_at_import_keeps_its_record_on_the_last_value(pricing_project):
    (pricing_project / "pricing.py").write_text("RATE = 0.5\nRATE = RATE + 0.25\n")
    report = run_deferred_driver(pricing_project, deferred={"pricing.RATE": (3, 1.5)})
    assert report["values"][0] == 1.75
    assert report["records"]["pricing.RATE"] == [1.75, 3, True]


def test_a_param_naming_a_function_warns_once_and_the_module_still_imports(pricing_project):
    (pricing_project / "pricing.py").write_text("def RATE():\n    return 0.5\nDOUBLED = RATE() * 2\n")
    report = run_deferred_driver(pricing_project)
    assert report["values"][1] == 1.0
    assert "pricing.RATE" not in report["records"]
    warned = [w for w in report["warnings"] if "--param pricing:RATE" in w]
    assert len(warned) == 1 and warned[0].startswith("ConfigParamWarning")


def test_a_param_that_only_functions_assign_is_reported_after_the_module_ran(pricing_project):
    (pricing_project / "pricing.py").write_text("def setup():\n    global RATE\n    RATE = 0.5\n")
    report = run_deferred_driver(pricing_project)
    assert any("--param pricing:RATE was not declared" in w for w in report["warnings"]), report["warnings"]


def test_a_trainable_function_called_at_import_time_runs_its_deferred_source(pricing_project):
    (pricing_project / "pricing.py").write_text(
        "def total(prices):\n    return sum(prices)\n\n\nIMPORT_TIME_TOTAL = total([10, 20])\n"
    )
    source = "def total(prices):\n    return round(sum(prices) * 1.1, 2)\n"
    report = run_deferred_driver(pricing_project, specs=(), trainable=("pricing:total",),
                                 sources={"pricing.total": (5, source)})
    assert (report["import_time_total"], report["source_errors"]) == (33.0, {})


def test_a_trainable_function_without_deferred_source_runs_as_written_at_import_time(pricing_project):
    (pricing_project / "pricing.py").write_text(
        "def total(prices):\n    return sum(prices)\n\n\nIMPORT_TIME_TOTAL = total([10, 20])\n"
    )
    report = run_deferred_driver(pricing_project, specs=(), trainable=("pricing:total",))
    assert report["import_time_total"] == 30


def test_store_hooks_watch_only_module_level_assignments_of_the_param_names():
    from tracer import import_hook

    source = textwrap.dedent("""
        RATE = 1
        OTHER = 2
        def f():
            global RATE
            RATE = 3
        class C:
            RATE = 4
        A = RATE = 5
    """)
    code = import_hook.insert_store_hooks(compile(source, "m.py", "exec"), ["m:RATE"])
    calls = []
    namespace = {"__name__": "m", import_hook.STORE_HOOK: lambda *args: calls.append(args)}
    exec(code, namespace)
    namespace["f"]()
    assert calls == [("RATE", ("m:RATE",), False)] * 2
    assert (namespace["RATE"], namespace["A"], namespace["C"].RATE, namespace["OTHER"]) == (3, 5, 4, 2)


def test_code_with_store_hooks_is_marshallable_and_unchanged_without_watched_names():
    import marshal

    from tracer import import_hook

    code = compile("try:\n    RATE = 1\nexcept Exception:\n    RATE = 2\n", "m.py", "exec")
    hooked = import_hook.insert_store_hooks(code, ["m:RATE"])
    assert marshal.loads(marshal.dumps(hooked)).co_names == hooked.co_names
    assert import_hook.STORE_HOOK in hooked.co_names
    assert import_hook.insert_store_hooks(code, ["m:NOT_STORED"]) is code


def test_a_param_module_run_by_runpy_in_a_fresh_namespace_still_works(pricing_project):
    report = run_deferred_driver(
        pricing_project,
        after="import runpy\nns = runpy.run_module('pricing', run_name='again')\nassert ns['DOUBLED'] == 1.0, ns['DOUBLED']",
    )
    assert report["values"][:2] == [0.5, 1.0]


def test_config_param_naming_nothing_warns_and_the_module_still_imports(project):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(params=("shop:NO_SUCH_NAME",)))
        import shop
        print(shop.double(2))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"
    assert "ConfigParamWarning: tracer: --param shop:NO_SUCH_NAME was not declared" in out.stderr


def test_nested_function_target_instruments_only_the_inner_function(project):
    (project / "nested.py").write_text(textwrap.dedent("""
        def outer(k):
            def inner(x):
                return x * k
            return inner

        class Box:
            class Lid:
                def close(self):
                    return "closed"
    """))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(targets=("nested:outer.<locals>.inner", "nested:Box.Lid.close")))
        import nested
        def instrumented(f):
            return any(n.startswith("__@trace_") for n in f.__code__.co_names)
        inner = nested.outer(3)
        print(instrumented(inner), instrumented(nested.outer), instrumented(nested.Box.Lid.close), inner(2), nested.Box.Lid().close())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True", "6", "closed"]


def test_module_found_by_another_meta_path_finder_is_still_rewritten(project, tmp_path):
    # setuptools' editable installs map package names to directories that are not on sys.path
    hidden = tmp_path / "elsewhere"
    hidden.mkdir()
    (hidden / "hidden_mod.py").write_text("def f(x):\n    return x + 1\n")
    code = textwrap.dedent(f"""
        import importlib.machinery, importlib.util, sys
        class MappingFinder:
            def find_spec(self, name, path=None, target=None):
                if name == "hidden_mod":
                    return importlib.util.spec_from_file_location(name, {str(hidden / "hidden_mod.py")!r})
                return None
        sys.meta_path.append(MappingFinder())
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(targets=("hidden_mod:f",)))
        import hidden_mod
        print(any(n.startswith("__@trace_") for n in hidden_mod.f.__code__.co_names), hidden_mod.f(1))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "2"]


def test_target_in_an_extension_module_warns_that_it_cannot_be_traced(tmp_path):
    code = textwrap.dedent("""
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(targets=("_csv:reader",)))
        import _csv
        print("imported")
    """)
    env = child_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    if "_csv" in sys.builtin_module_names:
        pytest.skip("_csv is built into this interpreter")
    assert out.stdout.strip() == "imported"
    assert "TracingDisabledWarning: tracer: module '_csv' is not Python source" in out.stderr


def test_rewritten_code_run_by_runpy_in_a_fresh_namespace_still_works(project):
    # runpy (and so multiprocessing's spawn of a `-m` program) executes loader.get_code()
    # in a namespace the hook never prepared
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.path.insert(0, {str(project)!r})
        from tracer import config, import_hook
        import_hook.install(config.TraceConfig(targets=("shop:double",)))
        namespace = runpy.run_module("shop", run_name="not_main")
        print(namespace["double"](5), any(n.startswith("__@trace_") for n in namespace["double"].__code__.co_names))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(project.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10", "True"]


# A script whose first lines use its own parameter and its own trainable function.
SCRIPT_USING_ITS_PARAMS = '''\
SYSTEM = "Be brief."
print("system", SYSTEM)


def total(prices):
    return sum(prices)


print("total", total([10, 20]))
'''

# Runs the script through trace-run's runner with the session's catch-up patch already deferred.
RUNNER_DRIVER = '''\
import sys
from tracer import config, import_hook, params, runner
params.registry.deferred.update({deferred!r})
params.registry.deferred_sources.update({sources!r})
cfg = config.TraceConfig(params={specs!r}, trainable={trainable!r})
import_hook.install(cfg)
status = runner.run_path({script!r}, [], cfg)
print("errors", sorted(params.registry.deferred_source_errors.items()), "status", status)
'''

TAXED_TOTAL = "def total(prices):\n    return round(sum(prices) * 1.1, 2)\n"


def run_script_in_runner(project, *, deferred=None, sources=None, specs=(), trainable=()) -> list[str]:
    script = project / "script.py"
    script.write_text(SCRIPT_USING_ITS_PARAMS)
    code = RUNNER_DRIVER.format(deferred=deferred or {}, sources=sources or {}, specs=tuple(specs),
                                trainable=tuple(trainable), script=str(script))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(project.parent), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_a_script_uses_its_deferred_param_value_from_its_next_line(project):
    out = run_script_in_runner(project, deferred={"script.SYSTEM": (2, "Be polite.")}, specs=("__main__:SYSTEM",))
    assert out == ["system Be polite.", "total 30", "errors [] status 0"]


def test_a_script_calls_its_trainable_function_with_the_deferred_source_from_the_first_call(project):
    out = run_script_in_runner(project, sources={"script.total": (3, TAXED_TOTAL)}, trainable=("__main__:total",))
    assert out == ["system Be brief.", "total 33.0", "errors [] status 0"]


def test_a_deferred_source_that_does_not_fit_leaves_the_scripts_function_as_written(project):
    out = run_script_in_runner(project, sources={"script.total": (3, "def total(prices, extra):\n    return 0\n")},
                               trainable=("__main__:total",))
    assert out[:2] == ["system Be brief.", "total 30"]
    assert out[2].startswith("errors [('script.total', ") and out[2].endswith("status 0")


def test_cache_location_uses_its_own_tag_next_to_the_normal_pyc(tmp_path):
    from tracer.import_hook import CACHE_TAG, cache_location

    path = cache_location(str(tmp_path / "mod.py"))
    assert path == str(tmp_path / "__pycache__" / f"mod.{CACHE_TAG}.pyc")
    assert CACHE_TAG != sys.implementation.cache_tag


def test_a_marked_module_imported_while_tracer_params_is_still_importing_loads(monkeypatch):
    # tracer.params imports standard modules; when one of them is marked
    # (`json:*`), the hook runs while tracer.params has no registry yet.
    # That means no patch has arrived: nothing is deferred, nothing crashes.
    import types

    from tracer import import_hook

    monkeypatch.setitem(sys.modules, "tracer.params", types.ModuleType("tracer.params"))
    assert import_hook._deferred_sources_pending() is False
    import_hook._apply_deferred_sources()
