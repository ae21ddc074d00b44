"""Import cost of a marked module served from the import hook's cache, against a plain import.

    python benchmarks/bench_import.py [--repeats 40] [--module difflib]

Copies a pure-Python stdlib module (difflib by default: ~2,000 lines, 60
functions and methods) into a temporary project under another name, then
imports it in fresh interpreters, interleaving the variants:

- plain:        tracer loaded but no hook installed, the normal pyc cache warm (the baseline)
- hook, unmarked: hook installed for another module (the bail-out path)
- marked, warm: hook installed, every function marked (MOD:*), rewritten code from the hook's cache
- marked, cold: the same with the hook's cache removed first (compile + rewrite + write)

Only the `import` statement is timed (perf_counter_ns inside the child),
after the hook is installed, so interpreter and tracer start-up are not
counted. Prints the median of each and its ratio to plain, measured in the
same run. Goal: marked, warm <= 2x plain.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

CHILD = '''\
import sys, time
sys.path.insert(0, {project!r})
variant = {variant!r}
# every variant loads the tracer (and so the stdlib modules it uses), so the
# timed import finds the same modules already loaded: only the hook differs
from tracer import config, import_hook, marking
if variant != "plain":
    target = "{module}:*" if variant.startswith("marked") else "some_other_module:*"
    import_hook.install(config.TraceConfig(targets=(target,)))
t0 = time.perf_counter_ns()
import {module}
t1 = time.perf_counter_ns()
if variant.startswith("marked"):
    assert import_hook.stats.rewrites == (1 if variant == "marked-cold" else 0), import_hook.stats
print(t1 - t0)
'''

VARIANTS = ("plain", "hook-unmarked", "marked-warm", "marked-cold")


def run_child(project: str, module: str, variant: str, env: dict) -> int:
    if variant == "marked-cold":
        for path in glob.glob(os.path.join(project, "__pycache__", f"{module}.*-trace*.pyc")):
            os.unlink(path)
    code = CHILD.format(project=project, module=module, variant=variant)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{variant} child failed:\n{out.stderr}")
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--module", default="difflib", help="pure-Python stdlib module to copy and import")
    args = parser.parse_args()

    source = importlib.util.find_spec(args.module).origin
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_") and k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as project:
        module = f"bench_{args.module}"
        shutil.copy(source, os.path.join(project, f"{module}.py"))
        # warm both caches once (normal pyc, and the hook's)
        run_child(project, module, "plain", env)
        run_child(project, module, "marked-cold", env)
        times: dict[str, list[int]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                times[variant].append(run_child(project, module, variant, env))
            # marked-cold removed the hook's cache and rewrote it: the next warm run reads it again

    plain = statistics.median(times["plain"])
    print(f"Python {sys.version.split()[0]}, module {args.module} ({args.repeats} fresh interpreters per variant, median)")
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        print(f"  {variant:14} {median / 1e6:8.3f} ms   {median / plain:5.2f}x plain")


if __name__ == "__main__":
    main()
