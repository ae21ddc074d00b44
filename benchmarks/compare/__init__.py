"""Side-by-side benchmarks of trace-live and Microsoft Trace (`opto`, PyPI `trace-opt`).

`python benchmarks/run_comparison.py [--quick]` is the one command. The
pieces:

- `programs/`: the measured programs. `workload.py` is the plain code both
  systems trace; `opto_*.py` run in opto's own virtual environment,
  `ours_*.py` under `trace-run` in the project's; `measure.py` (timing,
  RSS, the `RESULT` line) is shared by both.
- `opto_venv.py`: creates that environment (trace-opt, the few modules
  importing it needs, matplotlib), offline at run time.
- `opto_side.py`, `our_side.py`: run one side's programs and collect their
  figures; `daemon.py` gives our side a private daemon per figure;
  `runner.py` runs one program and reads its result; `commands.py` finds
  the project's console scripts for an interpreter.
- `loopback.py`: the instant LLM both optimizers talk to (the project's
  fake_llm server answering from the prompt); `tokens.py` counts prompt
  tokens by one rule for both.
- `harness.py`: runs both sides for every figure; `sizes.py` says how big
  (full, `--quick`, the unit suite's smoke run) and where opto is capped.
- `report.py`: the Markdown section of benchmarks/README.md;
  `plot_figures.py` draws the plots (run in the opto venv, which has
  matplotlib); `machine.py` describes where it all ran.

Nothing in the project imports this package; it reaches the project only
through the programs it runs in subprocesses and the loopback LLM server.
"""
