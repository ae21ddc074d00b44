"""Benchmark trace-live side by side with Microsoft Trace (opto) and regenerate the page.

    python benchmarks/run_comparison.py            # full run (tens of minutes on 2 cores)
    python benchmarks/run_comparison.py --quick    # tiny sizes, a smoke run (about a minute)

The full run installs `trace-opt` into its own virtual environment
(benchmarks/.opto-venv) on first use, measures both systems, writes the raw
results to benchmarks/.work/comparison.json, draws benchmarks/plots/*.png
and rewrites the comparison section of benchmarks/README.md (only the text
between `<!-- comparison:start -->` and `<!-- comparison:end -->`).

A `--quick` run writes its page, plots and results under
benchmarks/.work/quick/ instead, so tiny-size numbers never replace the
published ones (add --update-readme to publish them anyway).

Our side runs with --python (default: this interpreter), which must have the
project installed; opto's side runs in its own venv.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.compare import harness, opto_venv, report  # noqa: E402

BENCHMARKS = ROOT / "benchmarks"
PLOT_SCRIPT = BENCHMARKS / "compare" / "plot_figures.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/run_comparison.py",
                                     description="Measure trace-live and opto side by side; regenerate the page.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes; results go to benchmarks/.work/quick/ unless --update-readme")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for our side, with the project installed (default: this one)")
    parser.add_argument("--opto-venv", type=Path, default=BENCHMARKS / ".opto-venv",
                        help="where opto's own virtual environment lives (created if missing)")
    parser.add_argument("--opto-python", default=sys.executable,
                        help="interpreter the opto environment is created from (default: this one; "
                             "its pinned packages need CPython 3.11+)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not create the opto environment; skip opto's side if it is missing")
    parser.add_argument("--skip-opto", action="store_true", help="measure our side only")
    parser.add_argument("--skip-ours", action="store_true", help="measure opto's side only")
    parser.add_argument("--update-readme", action="store_true", help="with --quick: publish to README.md anyway")
    parser.add_argument("--readme", type=Path, default=BENCHMARKS / "README.md", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    publish = not args.quick or args.update_readme
    out_dir = BENCHMARKS / ".work" / ("quick" if args.quick else "")
    plots_dir = BENCHMARKS / "plots" if publish else out_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)

    command = "python benchmarks/run_comparison.py" + (" --quick" if args.quick else "")
    options = harness.Options(our_python=args.python, opto_venv=args.opto_venv, opto_base_python=args.opto_python,
                              quick=args.quick,
                              run_ours=not args.skip_ours, run_opto=not args.skip_opto,
                              install_opto=not args.no_install, command=command,
                              log=lambda text: print(f"[comparison] {text}", flush=True))
    results = harness.run(options)
    results_path = out_dir / "comparison.json"
    results_path.write_text(json.dumps(results, indent=1))
    print(f"[comparison] results: {results_path}")

    plots = draw_plots(results_path, plots_dir, args.opto_venv, readme_dir=args.readme.parent if publish else out_dir)
    section = report.render(results, plots)
    if publish:
        report.rewrite_section(args.readme, section)
        print(f"[comparison] rewrote the comparison section of {args.readme}")
    else:
        page = out_dir / "comparison.md"
        page.write_text(section)
        print(f"[comparison] page: {page} (README.md untouched: --quick)")
    print(section)
    return 0


def draw_plots(results_path: Path, plots_dir: Path, venv: Path, readme_dir: Path) -> dict[str, str | None]:
    """Run plot_figures.py in the opto venv; return figure -> path relative to the page (None if not drawn)."""
    none = {"build": None, "memory": None}
    if not opto_venv.is_ready(venv):
        print("[comparison] plots not drawn: the opto environment (which has matplotlib) is missing")
        return none
    command = [str(opto_venv.venv_python(venv)), str(PLOT_SCRIPT), str(results_path), str(plots_dir)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        print(f"[comparison] plots not drawn: {shlex.join(command)} failed:\n{completed.stderr[-2000:]}")
        return none
    relative = plots_dir.resolve().relative_to(readme_dir.resolve()).as_posix()
    return {"build": f"{relative}/build_time.png", "memory": f"{relative}/memory.png"}


if __name__ == "__main__":
    sys.exit(main())
