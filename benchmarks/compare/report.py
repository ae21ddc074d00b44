"""The comparison section of benchmarks/README.md, rendered from the harness's results.

`render(results, plots)` returns Markdown; `rewrite_section(readme, text)`
replaces only what lies between the comparison markers (appending the
markers if the file has none) and leaves the rest of the file untouched.
Every number printed comes from `results`; a side that was not measured
is printed as "not measured yet" with the reason.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

START_MARKER = "<!-- comparison:start -->"
END_MARKER = "<!-- comparison:end -->"

NOT_MEASURED = "not measured yet"

# The project's goals against opto (benchmarks/README.md records them here).
GOAL_CALL_RATIO = 50.0
GOAL_OP_RATIO = 100.0
GOAL_MEMORY_AFTER_RELEASE_MIB = 10.0
GOAL_MEMORY_GROWTH_MIB = 64.0
GOAL_LINEAR_SLOPE = 1.2
GOAL_ROUND_TRIP_S = 0.050


class ReadmeMarkersBroken(ValueError):
    """The README has one comparison marker without the other, or them in the wrong order."""


# -- formatting ---------------------------------------------------------------

def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    magnitude = abs(seconds)
    if magnitude >= 1:
        return f"{seconds:.2f} s"
    if magnitude >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    if magnitude >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def fmt_bytes(count: float | None) -> str:
    if count is None:
        return "-"
    return f"{count / 2**20:+.1f} MiB"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 10:
        return f"{ratio:,.0f}x"
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def fmt_count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _missing(entry: dict, side: str) -> str:
    reason = entry.get(side + "_error") or "not run"
    return f"{NOT_MEASURED} ({_one_line(reason)})"


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- derived figures ------------------------------------------------------------

def call_ratio(figures: dict, name: str, key: str = "overhead_s") -> float | None:
    """opto's overhead / ours for the per-call or per-op figure (`key`: burst or sustained overhead)."""
    entry = figures[name]
    if not entry.get("ours") or not entry.get("opto"):
        return None
    return ratio(entry["opto"].get(key), entry["ours"].get(key))


def build_rows(entry: dict, side: str) -> dict[int, dict]:
    rows = entry.get(side) or []
    return {row["nodes"]: row for row in rows if "error" not in row and row.get("build_s") is not None}


def dropped_events(row: dict) -> int:
    """Events our tracer dropped in a run (then the daemon's graph is incomplete)."""
    return int(((row.get("tracer") or {}).get("dropped")) or 0)


def complete_build_points(rows: dict[int, dict]) -> list[tuple[int, float]]:
    """(nodes, build time) of the runs whose graph arrived whole: the only ones a growth rate may use."""
    return [(n, row["build_s"]) for n, row in sorted(rows.items()) if dropped_events(row) == 0]


def loglog_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x): 1 is linear, 2 quadratic."""
    points = [(x, y) for x, y in points if x > 0 and y > 0]
    if len(points) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / denominator


def outside_llm(step: dict | None) -> list[float] | None:
    """Round trips minus the LLM's own time, per step (None when not measured)."""
    if not step:
        return None
    llm = step.get("llm_s") or []
    trips = step["round_trip_s"]
    return [trip - (llm[i] if i < len(llm) else 0.0) for i, trip in enumerate(trips)]


# -- rendering ------------------------------------------------------------------

def render(results: dict[str, Any], plots: dict[str, str | None]) -> str:
    """The whole comparison section (without the markers)."""
    figures = results["figures"]
    lines: list[str] = ["## Side by side with Microsoft Trace (opto)", ""]
    lines += _preamble(results)
    lines += _goals(figures, results)
    lines += _call_section(figures, results, "call_cost")
    lines += _call_section(figures, results, "op_cost")
    lines += _memory_section(figures, results, plots.get("memory"))
    lines += _build_section(figures, results, plots.get("build"))
    lines += _prompt_section(figures, results)
    lines += _step_section(figures, results)
    return "\n".join(lines).rstrip() + "\n"


def _where(results: dict) -> str:
    machine = results.get("machine") or {}
    ours_py = machine.get("our_python", "?")
    opto_py = machine.get("opto_python") or "-"
    return (f"_Reproduce: `{results['command']}`. Measured {machine.get('date', '?')} on "
            f"{machine.get('cores', '?')} cores, {machine.get('memory_gib', '?')} GiB, {machine.get('system', '?')}; "
            f"ours on CPython {ours_py}, opto {results.get('opto_version') or '-'} on CPython {opto_py}._")


def _preamble(results: dict) -> list[str]:
    lines = [
        "Generated by `python benchmarks/run_comparison.py` (this section only; do not edit by hand). "
        "Both systems trace the same plain code (`benchmarks/compare/programs/workload.py`): opto through "
        "`bundle`/`node` in its own virtual environment (`benchmarks/.opto-venv`, PyPI `trace-opt`), ours "
        "unchanged under `trace-run` with the functions marked by configuration, against a private daemon. "
        "Both optimizers talk through the real `openai` SDK to one loopback LLM that answers instantly. "
        "Every figure is ours and opto's from the same run, on the same machine, at the same time.",
        "",
    ]
    if results.get("quick"):
        lines += ["**This is a `--quick` smoke run with tiny sizes: the figures below are not representative.**", ""]
    return lines


def _goal_row(goal: str, result: str, met: bool | None) -> str:
    verdict = NOT_MEASURED if met is None else ("met" if met else "**missed**")
    return f"| {goal} | {result} | {verdict} |"


def _goals(figures: dict, results: dict) -> list[str]:
    lines = ["### Goals", "", "| goal | this run | verdict |", "|---|---|---|"]
    for name, what, goal in (("call_cost", "call", GOAL_CALL_RATIO), ("op_cost", "operation", GOAL_OP_RATIO)):
        burst, sustained = call_ratio(figures, name), call_ratio(figures, name, "sustained_overhead_s")
        met = None if burst is None or sustained is None else (burst >= goal and sustained >= goal)
        result = (f"burst {fmt_ratio(burst)}, sustained {fmt_ratio(sustained)}"
                  if burst is not None and sustained is not None else "-")
        lines.append(_goal_row(f">= {goal:.0f}x less overhead per traced {what} than opto (burst and sustained)",
                               result, met))
    memory = figures["memory"].get("ours")
    if memory:
        largest = memory["points"][-1][1] / 2**20
        released = memory["after_release_bytes"] / 2**20
        dropped = int(((memory.get("tracer") or {}).get("dropped")) or 0)
        # Dropped events were never held: a flat line bought by dropping them is not the goal.
        flat = largest <= GOAL_MEMORY_GROWTH_MIB and abs(released) <= GOAL_MEMORY_AFTER_RELEASE_MIB and not dropped
        text = (f"{fmt_bytes(memory['points'][-1][1])} after {fmt_count(memory['points'][-1][0])} calls, "
                f"{fmt_bytes(memory['after_release_bytes'])} after release"
                + (f", {dropped:,} events dropped" if dropped else ""))
        lines.append(_goal_row(f"flat memory (growth <= {GOAL_MEMORY_GROWTH_MIB:.0f} MiB at the largest count, "
                               f"within {GOAL_MEMORY_AFTER_RELEASE_MIB:.0f} MiB of baseline after release, "
                               "no events dropped)", text, flat))
    else:
        lines.append(_goal_row("flat memory", "-", None))
    points = complete_build_points(build_rows(figures["build"], "ours"))
    slope = loglog_slope(points)
    lines.append(_goal_row(f"linear graph handling (log-log slope of build time <= {GOAL_LINEAR_SLOPE}, "
                           "runs with dropped events left out)",
                           f"slope {slope:.2f} over {', '.join(fmt_count(n) for n, _ in points)} nodes"
                           if slope is not None else "-",
                           None if slope is None else slope <= GOAL_LINEAR_SLOPE))
    prompt = figures["prompt"]
    if prompt.get("ours") and prompt.get("opto"):
        ours_tokens, opto_tokens = prompt["ours"]["tokens"], prompt["opto"]["tokens"]
        lines.append(_goal_row("prompt not larger than opto's for the same program",
                               f"{ours_tokens:,} vs {opto_tokens:,} tokens", ours_tokens <= opto_tokens))
    else:
        lines.append(_goal_row("prompt not larger than opto's for the same program", "-", None))
    step = figures["step"].get("ours") or {}
    for key, who in (("single", "1 process"), ("many", f"{step.get('processes', 'several')} processes")):
        goal = f"patch round trip < {GOAL_ROUND_TRIP_S * 1e3:.0f} ms outside the LLM ({who}, slowest step)"
        trips = outside_llm(step.get(key))
        if trips:
            lines.append(_goal_row(goal, fmt_time(max(trips)), max(trips) < GOAL_ROUND_TRIP_S))
        else:
            lines.append(_goal_row(goal, "-", None))
    return lines + ["", _where(results), ""]


_CALL_TITLES = {
    "call_cost": ("### Cost per traced call", "call",
                  "`workload.inc` (`return x + 1`) called from an untraced loop: opto's `bundle()(inc)` against "
                  "the same function marked with `trace-run --target workload:inc --granularity call`. "
                  "Overhead = traced call - plain call, both measured in the same process."),
    "op_cost": ("### Cost per traced operation", "operation",
                "`workload.poly` (eight binary operations): opto runs it on `node` inputs (its node operators), "
                "ours runs it on plain ints with `--granularity op`. Figures are per operation."),
}


def _call_section(figures: dict, results: dict, name: str) -> list[str]:
    title, unit, description = _CALL_TITLES[name]
    entry = figures[name]
    sizes = results["sizes"]
    burst_n, sustained_n = (sizes.get("call_burst"), sizes.get("call_sustained")) if name == "call_cost" else \
        (sizes.get("op_burst"), sizes.get("op_sustained"))
    lines = [title, "", description,
             f"*Burst*: the fastest of {sizes.get('repeats')} loops of {burst_n} calls, each started with empty "
             f"buffers (the hot path's own cost). *Sustained*: one loop of {sustained_n} calls back to back "
             "(ours: including back-pressure when its flusher and daemon fall behind; opto: including its "
             "growing graph).", "",
             f"| | plain | traced, burst | traced, sustained | overhead per {unit}, burst | "
             f"overhead per {unit}, sustained | events dropped (sustained) |",
             "|---|---|---|---|---|---|---|"]
    for side in ("ours", "opto"):
        data = entry.get(side)
        if data:
            dropped = data.get("sustained_dropped")
            dropped_text = "-" if dropped is None else (f"**{dropped:,}**" if dropped else "0")
            lines.append(f"| {side} | {fmt_time(data['plain_s'])} | {fmt_time(data['traced_s'])} | "
                         f"{fmt_time(data.get('sustained_s'))} | {fmt_time(data['overhead_s'])} | "
                         f"{fmt_time(data.get('sustained_overhead_s'))} | {dropped_text} |")
        else:
            lines.append(f"| {side} | {_missing(entry, side)} | | | | | |")
    burst, sustained = call_ratio(figures, name), call_ratio(figures, name, "sustained_overhead_s")
    lines.append("")
    if burst is not None and sustained is not None:
        lines.append(f"opto's overhead / ours: **{fmt_ratio(burst)}** in bursts, **{fmt_ratio(sustained)}** sustained.")
    else:
        lines.append(f"opto's overhead / ours: {NOT_MEASURED}.")
    ours = entry.get("ours") or {}
    if ours.get("sustained_dropped"):
        lines.append("Events were dropped in our sustained loop: that part of the run was not fully traced, so its "
                     "cost is understated.")
    tracer = ours.get("tracer")
    if tracer:
        per_call = ours.get("events_per_call")
        recorded = f"; it recorded {per_call:.1f} events per call in the sustained loop" if per_call else ""
        lines.append(f"Our process was connected to its daemon and sent {tracer.get('events_sent'):,} events "
                     f"({tracer.get('dropped'):,} dropped) in the whole program{recorded}.")
    return lines + ["", _where(results), ""]


def _memory_section(figures: dict, results: dict, plot: str | None) -> list[str]:
    entry = figures["memory"]
    ours, opto = entry.get("ours"), entry.get("opto")
    lines = ["### Resident memory after N traced calls", "",
             "Growth of the traced process's RSS over its own baseline (after imports and one warm-up call) "
             "while `workload.inc` is called N times; the program keeps only its last result. "
             "\"After release\": opto drops every reference the program holds (its global graph keeps the nodes); "
             "ours calls `tracer.new_episode()`, the end of a forward run.", ""]
    counts = sorted({p[0] for p in (ours or {}).get("points", [])} | {p[0] for p in (opto or {}).get("points", [])})
    ours_points = dict(map(tuple, (ours or {}).get("points", [])))
    opto_points = dict(map(tuple, (opto or {}).get("points", [])))
    lines += ["| traced calls | ours | opto |", "|---|---|---|"]
    for n in counts:
        lines.append(f"| {fmt_count(n)} | {_point(ours, ours_points, n, entry, 'ours')} | "
                     f"{_point(opto, opto_points, n, entry, 'opto')} |")
    lines.append(f"| after release | {fmt_bytes(ours['after_release_bytes']) if ours else _missing(entry, 'ours')} | "
                 f"{fmt_bytes(opto['after_release_bytes']) if opto else _missing(entry, 'opto')} |")
    if opto and opto.get("after_graph_clear_bytes") is not None:
        lines.append(f"| opto after `GRAPH.clear()` (drops every node of every run) | | "
                     f"{fmt_bytes(opto['after_graph_clear_bytes'])} |")
    lines.append("")
    if opto and opto["points"] and ours and opto["points"][-1][0] < ours["points"][-1][0]:
        n, grown = opto["points"][-1]
        per_call = grown / n
        target = ours["points"][-1][0]
        lines.append(f"{results['caps']['memory']}: it grew {per_call / 1024:.1f} KiB per call, so "
                     f"{fmt_count(target)} calls would need about {per_call * target / 2**30:.1f} GiB "
                     "(extrapolated, not run).")
    if ours and ours.get("daemon_growth_bytes") is not None:
        lines.append(f"Our daemon (a separate process holding the events) grew by {fmt_bytes(ours['daemon_growth_bytes'])} "
                     "during our run.")
    if ours and ours.get("tracer"):
        t = ours["tracer"]
        dropped = int(t.get("dropped") or 0)
        lines.append(f"Our tracer sent {t.get('events_sent'):,} events, dropped "
                     f"{f'**{dropped:,}**' if dropped else 0} and auto-released {t.get('episodes_auto_rolled')} "
                     "oversized episodes."
                     + (" Dropped events were never kept, so our figures understate what full tracing "
                        "of these calls would hold." if dropped else ""))
    if plot:
        lines += ["", f"![memory vs traced calls]({plot})"]
    return lines + ["", _where(results), ""]


def _point(side_result: dict | None, points: dict, n: int, entry: dict, side: str) -> str:
    if side_result is None:
        return _missing(entry, side)
    return fmt_bytes(points[n]) if n in points else "not run (capped)"


def _build_section(figures: dict, results: dict, plot: str | None) -> list[str]:
    entry = figures["build"]
    ours_rows, opto_rows = build_rows(entry, "ours"), build_rows(entry, "opto")
    ours_errors = {r["nodes"]: r["error"] for r in entry.get("ours") or [] if "error" in r}
    opto_errors = {r["nodes"]: r["error"] for r in entry.get("opto") or [] if "error" in r}
    lines = ["### Feedback subgraph + problem instance on a chain of N nodes", "",
             "A chain of N value nodes (a trainable start value, then N-1 calls of `workload.advance`), feedback "
             "on the last value. opto: `backward` + OptoPrime's `summarize` and `construct_prompt` (no LLM). "
             "Ours: the daemon's step outside the LLM (graph from events, feedback subgraph, problem instance, "
             "parsing, validation), from its step record; `tracer.step()` is the whole call in the program "
             "(flushing the chain's events, the step with one loopback LLM request, the patch).", "",
             "| nodes | ours: daemon, outside LLM | ours: `tracer.step()` | ours: events dropped | opto: backward "
             "| opto: problem instance | opto: total | opto / ours |", "|---|---|---|---|---|---|---|---|"]
    all_nodes = sorted(set(ours_rows) | set(opto_rows) | set(ours_errors) | set(opto_errors)
                       | set(results["sizes"].get("chain_nodes_ours", ())))
    for n in all_nodes:
        o, p = ours_rows.get(n), opto_rows.get(n)
        ours_cells = (f"{fmt_time(o['build_s'])} | {fmt_time(o['step_s'])} | {_dropped_cell(o)}" if o else
                      f"{NOT_MEASURED} ({_one_line(ours_errors.get(n) or entry.get('ours_error') or 'not run')}) | | ")
        if p:
            opto_cells = f"{fmt_time(p['backward_s'])} | {fmt_time(p['problem_s'])} | {fmt_time(p['build_s'])}"
        elif n in opto_errors or entry.get("opto_error"):
            opto_cells = f"{NOT_MEASURED} ({_one_line(opto_errors.get(n) or entry.get('opto_error'))}) | | "
        else:
            opto_cells = "not run (capped) | | "
        r = ratio(p["build_s"], o["build_s"]) if (o and p) else None
        lines.append(f"| {fmt_count(n)} | {ours_cells} | {opto_cells} | {fmt_ratio(r)} |")
    lines.append("")
    opto_slope = loglog_slope([(n, r["build_s"]) for n, r in opto_rows.items()])
    ours_slope = loglog_slope(complete_build_points(ours_rows))
    lines.append(f"Growth (log-log slope; 1 = linear, 2 = quadratic; ours without runs that dropped events): ours "
                 f"{'%.2f' % ours_slope if ours_slope is not None else NOT_MEASURED}, opto "
                 f"{'%.2f' % opto_slope if opto_slope is not None else NOT_MEASURED}.")
    if opto_rows and max(opto_rows) < max(results["sizes"].get("chain_nodes_ours", (0,)) or (0,)):
        lines.append(results["caps"]["build"] + ".")
    factors = _growth_factors(opto_rows)
    if factors:
        lines.append("opto's time factor from one chain to the next: " + ", ".join(factors) + ".")
    if plot:
        lines += ["", f"![build time vs graph size]({plot})"]
    return lines + ["", _where(results), ""]


def _growth_factors(rows: dict[int, dict]) -> list[str]:
    sizes = sorted(rows)
    return [f"{fmt_count(a)} -> {fmt_count(b)} nodes: {rows[b]['build_s'] / rows[a]['build_s']:.1f}x time"
            for a, b in zip(sizes, sizes[1:]) if rows[a]["build_s"] > 0]


def _dropped_cell(row: dict) -> str:
    dropped = dropped_events(row)
    if not dropped:
        return "0"
    sent = (row.get("tracer") or {}).get("events_sent")
    return f"**{dropped:,}** of {dropped + (sent or 0):,}: the daemon's graph was incomplete"


def _prompt_section(figures: dict, results: dict) -> list[str]:
    entry = figures["prompt"]
    lines = ["### Prompt size for the same program", "",
             "The first request each optimizer sent to the LLM for the same pipeline (`normalize` -> "
             "`add_greeting` -> `count_words`, trainable greeting, the same feedback), system and user "
             "messages together, as the loopback server received it. Tokens are counted by one rule for both "
             "(`benchmarks/compare/tokens.py`: pre-tokenizer pieces, a lower bound of a BPE count).", "",
             "| | characters | tokens |", "|---|---|---|"]
    for side in ("ours", "opto"):
        data = entry.get(side)
        lines.append(f"| {side} | {data['chars']:,} | {data['tokens']:,} |" if data else
                     f"| {side} | {_missing(entry, side)} | |")
    ours, opto = entry.get("ours"), entry.get("opto")
    if ours and opto:
        verdict = "not larger" if ours["tokens"] <= opto["tokens"] else "**larger** (goal missed)"
        lines += ["", f"Ours / opto: {ours['tokens'] / opto['tokens']:.2f} of opto's tokens: {verdict}."]
    lines += _chain_prompt_rows(figures["build"])
    return lines + ["", _where(results), ""]


def _chain_prompt_rows(build: dict) -> list[str]:
    """Prompt length for the chains of the build figure (opto's from construct_prompt, ours from the step record)."""
    ours_rows, opto_rows = build_rows(build, "ours"), build_rows(build, "opto")
    nodes = sorted(n for n in set(ours_rows) | set(opto_rows)
                   if (ours_rows.get(n) or {}).get("prompt_chars") or (opto_rows.get(n) or {}).get("prompt_chars"))
    if not nodes:
        return []
    lines = ["", "The prompt each optimizer built for the chains of the figure above (characters, system and user messages):", "",
             "| nodes | ours | opto |", "|---|---|---|"]
    for n in nodes:
        cells = []
        for rows in (ours_rows, opto_rows):
            chars = (rows.get(n) or {}).get("prompt_chars")
            cells.append(f"{chars:,}" if chars else "-")
        lines.append(f"| {fmt_count(n)} | {cells[0]} | {cells[1]} |")
    return lines


def _step_section(figures: dict, results: dict) -> list[str]:
    entry = figures["step"]
    ours = entry.get("ours") or {}
    opto = entry.get("opto")
    lines = ["### One optimisation step, LLM answering instantly", "",
             "The pipeline above, feedback on its output, then one step. Ours: from `tracer.step()` until the new "
             "greeting is live in the process (and, with several processes in one session, in every one of them); "
             "the LLM's own time (the daemon's LLM layer measures each request) is subtracted. opto: "
             "`OptoPrime.step()` in the process that ran (problem instance, LLM request, parsing, update); its LLM "
             "request is timed where opto makes it (the `llm` callable) and subtracted. One warm-up step on each "
             "side is not counted.", "",
             "| | median, outside the LLM | slowest, outside the LLM | median, LLM included | steps |",
             "|---|---|---|---|---|"]
    for key, label in (("single", "ours, 1 process"),
                       ("many", f"ours, {ours.get('processes', '?')} processes in one session")):
        data = ours.get(key)
        trips = outside_llm(data)
        if trips:
            lines.append(f"| {label} | {fmt_time(statistics.median(trips))} | {fmt_time(max(trips))} | "
                         f"{fmt_time(statistics.median(data['round_trip_s']))} | {len(trips)} |")
        else:
            reason = ours.get(key + "_error") or entry.get("ours_error") or "not run"
            lines.append(f"| {label} | {NOT_MEASURED} ({_one_line(reason)}) | | | |")
    if opto:
        outside = outside_llm({"round_trip_s": opto["step_s"], "llm_s": opto.get("llm_s") or []})
        lines.append(f"| opto, 1 process | {fmt_time(statistics.median(outside))} | {fmt_time(max(outside))} | "
                     f"{fmt_time(statistics.median(opto['step_s']))} | {len(outside)} |")
    else:
        lines.append(f"| opto, 1 process | {_missing(entry, 'opto')} | | | |")
    lines.append("| opto, several processes | not possible: opto updates parameters only in the process that ran | | | |")
    return lines + ["", _where(results), ""]


# -- the README -----------------------------------------------------------------

def rewrite_section(readme: Path, section: str) -> None:
    """Replace the text between the comparison markers of `readme` with `section`.

    Appends the markers at the end when the file has neither; raises
    ReadmeMarkersBroken when only one is there (or they are swapped), so a
    hand-edited file is never half-overwritten.
    """
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start == -1 and end == -1:
        separator = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        text = f"{text}{separator}{START_MARKER}\n{END_MARKER}\n"
        start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start == -1 or end == -1 or end < start:
        raise ReadmeMarkersBroken(
            f"{readme}: expected {START_MARKER} before {END_MARKER}; fix the markers by hand "
            "(the comparison only rewrites what lies between them)")
    before = text[: start + len(START_MARKER)]
    after = text[end:]
    readme.write_text(f"{before}\n{section.rstrip()}\n{after}", encoding="utf-8")
