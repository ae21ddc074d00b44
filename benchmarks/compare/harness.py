"""Run every figure on both sides and put the results side by side.

`run(options)` returns one JSON-able dict (see `empty_results`): for each
figure, our result and opto's, or the reason one side was not measured.
A side that fails never stops the other side or the other figures: its
entry says why, and the page prints "not measured yet" with that reason.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.compare import loopback, machine, opto_venv
from benchmarks.compare.opto_side import OptoSide
from benchmarks.compare.our_side import OurSide
from benchmarks.compare.runner import ProgramFailed
from benchmarks.compare.sizes import CAPS, FULL, QUICK, Sizes
from benchmarks.compare.tokens import count_tokens

FIGURES = ("call_cost", "op_cost", "memory", "build", "prompt", "step")


@dataclass
class Options:
    """What one comparison run measures, with which interpreters, at which sizes."""

    our_python: str
    opto_venv: Path
    opto_base_python: str = sys.executable  # what the opto venv is created from
    quick: bool = False
    run_ours: bool = True
    run_opto: bool = True
    install_opto: bool = True      # create the opto venv if it is missing
    command: str = "python benchmarks/run_comparison.py"
    log: Callable[[str], None] = print
    figures: tuple[str, ...] = FIGURES   # a subset, for the smoke test
    size_override: Sizes | None = None   # other sizes than FULL / QUICK, for the smoke test

    @property
    def sizes(self) -> Sizes:
        if self.size_override is not None:
            return self.size_override
        return QUICK if self.quick else FULL


def empty_results(options: Options) -> dict[str, Any]:
    """The results skeleton: every figure present, with neither side measured yet."""
    return {
        "command": options.command,
        "quick": options.quick,
        "machine": None,
        "opto_version": None,
        "caps": dict(CAPS),
        "sizes": {k: v for k, v in vars(options.sizes).items()},
        "figures": {name: {"ours": None, "opto": None,
                           "ours_error": None if name in options.figures else "not part of this run",
                           "opto_error": None if name in options.figures else "not part of this run"}
                    for name in FIGURES},
    }


def run(options: Options) -> dict[str, Any]:
    """Measure everything `options` asks for; never raises for a failed measurement."""
    results = empty_results(options)
    figures = results["figures"]
    for side, wanted in (("ours", options.run_ours), ("opto", options.run_opto)):
        if not wanted:
            for entry in figures.values():
                entry[side + "_error"] = f"{side} side skipped in this run"
    server = loopback.start_server()
    llm_env = {"OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "loopback-no-key",
               "TRACE_LLM": "openai:bench-loopback"}
    try:
        opto = _opto_side(options, llm_env, results) if options.run_opto else None
        ours = OurSide(options.our_python, options.sizes, llm_env) if options.run_ours else None
        results["machine"] = machine.describe(options.our_python, opto.python if opto else None)
        for name in ("call_cost", "op_cost", "memory"):
            if name not in options.figures:
                continue
            for side_name, side in (("ours", ours), ("opto", opto)):
                if side is not None:
                    options.log(f"{name}: {side_name}")
                    _measure(figures[name], side_name, getattr(side, name))
        if "build" in options.figures:
            options.log("build: chains")
            _build(figures["build"], ours, opto, options.sizes, server)
        if "step" in options.figures or "prompt" in options.figures:
            options.log("step and prompt")
            _steps(figures, ours, opto, options.sizes, server)
    finally:
        server.stop()
    return results


def _opto_side(options: Options, llm_env: dict[str, str], results: dict) -> OptoSide | None:
    try:
        if options.install_opto:
            python = opto_venv.ensure(options.opto_venv, base_python=options.opto_base_python, log=options.log)
        elif opto_venv.is_ready(options.opto_venv):
            python = opto_venv.venv_python(options.opto_venv)
        else:
            raise opto_venv.OptoEnvironmentError(f"no opto environment at {options.opto_venv} (not installed in this run)")
        results["opto_version"] = opto_venv.opto_version(python)
        return OptoSide(python, options.sizes, llm_env)
    except opto_venv.OptoEnvironmentError as exc:
        for entry in results["figures"].values():
            entry["opto_error"] = str(exc)
        options.log(f"opto side skipped: {exc}")
        return None


def _measure(entry: dict, side: str, measure: Callable[[], Any]) -> None:
    try:
        entry[side] = measure()
    except Exception as exc:
        entry[side + "_error"] = failure_reason(exc)


def failure_reason(exc: BaseException) -> str:
    """What the page says when a side could not be measured: the program's last words, or the exception."""
    if isinstance(exc, ProgramFailed):
        lines = [line for line in exc.output.strip().splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "no output"
        status = "timed out" if exc.returncode is None else f"exit {exc.returncode}"
        return f"{last} ({status})"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _build(entry: dict, ours: OurSide | None, opto: OptoSide | None, sizes: Sizes,
           server: loopback.FakeLLMServer) -> None:
    for side_name, side, counts in (("ours", ours, sizes.chain_nodes_ours), ("opto", opto, sizes.chain_nodes_opto)):
        if side is None:
            continue
        rows = []
        for nodes in counts:
            first = server.request_count
            try:
                row = side.build(nodes)
            except Exception as exc:
                rows.append({"nodes": nodes, "error": failure_reason(exc)})
                continue
            sent = server.requests[first:]
            if sent:  # ours asks the LLM: measure the prompt as it arrived (opto's is measured in-process)
                row["prompt_chars"] = len(sent[-1].prompt_text)
            rows.append(row)
        entry[side_name] = rows


def _steps(figures: dict, ours: OurSide | None, opto: OptoSide | None, sizes: Sizes,
           server: loopback.FakeLLMServer) -> None:
    step, prompt = figures["step"], figures["prompt"]
    if opto is not None:
        first = server.request_count
        _measure(step, "opto", opto.step)
        prompt["opto"] = _first_prompt(server, first)
        if prompt["opto"] is None:
            prompt["opto_error"] = step["opto_error"] or "opto sent no request to the LLM"
    if ours is not None:
        first = server.request_count
        single: dict = {"ours": None, "ours_error": None}
        _measure(single, "ours", lambda: ours.step(1))
        prompt["ours"] = _first_prompt(server, first)
        if prompt["ours"] is None:
            prompt["ours_error"] = single["ours_error"] or "our daemon sent no request to the LLM"
        many: dict = {"ours": None, "ours_error": None}
        _measure(many, "ours", lambda: ours.step(sizes.processes))
        step["ours"] = {"processes": sizes.processes,
                        "single": single["ours"], "single_error": single["ours_error"],
                        "many": many["ours"], "many_error": many["ours_error"]}


def _first_prompt(server: loopback.FakeLLMServer, first_index: int) -> dict | None:
    requests = server.requests[first_index:]
    if not requests:
        return None
    text = requests[0].prompt_text
    return {"chars": len(text), "tokens": count_tokens(text), "text": text}

