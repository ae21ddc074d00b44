"""Side-by-side benchmarks of trace-live and Microsoft Trace (`opto`, PyPI `trace-opt`).

`python benchmarks/run_comparison.py [--quick]` is the one command. The
pieces:

- `programs/`: the measured programs. `workload.py` is the plain code both
  systems trace; `opto_*.py` run in opto's own virtual environment
  (`opto_venv.py`), `ours_*.py` run under `trace-run` in the project's.
- `opto_side.py`, `our_side.py`: run one side's programs and collect figures.
- `harness.py`: runs both sides for every figure and puts them side by side.
- `report.py`: the Markdown section of benchmarks/README.md; `plot_figures.py`
  draws the plots (run in the opto venv, which has matplotlib).

Nothing in this package is imported by the project; it imports the project
only through the programs it runs in subprocesses and the loopback LLM.
"""
