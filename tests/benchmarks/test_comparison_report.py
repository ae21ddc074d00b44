"""The comparison page: what it prints for measured, missing and capped figures, and how it edits the README."""
from __future__ import annotations

import pytest

from benchmarks.compare import report
from benchmarks.compare.harness import FIGURES
from benchmarks.compare.sizes import CAPS

MACHINE = {"cores": 2, "memory_gib": 23.5, "system": "Linux x86_64", "our_python": "3.11.7",
           "opto_python": "3.11.7", "date": "2026-11-21 01:00 UTC"}


def results_with(**figures) -> dict:
    """A harness result where every figure is missing on both sides except those given."""
    base = {name: {"ours": None, "opto": None, "ours_error": "tracer not installed", "opto_error": "no venv"}
            for name in FIGURES}
    for name, entry in figures.items():
        base[name] = {"ours_error": None, "opto_error": None, **entry}
    return {"command": "python benchmarks/run_comparison.py", "quick": False, "machine": MACHINE,
            "opto_version": "0.1.3.8", "caps": dict(CAPS), "sizes": {"chain_nodes_ours": (1000, 4000)},
            "figures": base}


def call(plain: float, traced: float, sustained: float | None = None, dropped: int = 0) -> dict:
    sustained = traced if sustained is None else sustained
    return {"plain_s": plain, "traced_s": traced, "overhead_s": traced - plain, "sustained_s": sustained,
            "sustained_overhead_s": sustained - plain, "sustained_dropped": dropped}


def test_missing_side_is_printed_as_not_measured_yet_with_its_reason():
    page = report.render(results_with(call_cost={"ours": None, "ours_error": "not traced: inc was not rewritten",
                                                 "opto": call(30e-9, 60e-6)}), plots={})
    row = next(line for line in page.splitlines() if line.startswith("| ours |"))
    assert "not measured yet (not traced: inc was not rewritten)" in row


def test_goal_is_met_when_opto_overhead_is_at_least_fifty_times_ours():
    page = report.render(results_with(call_cost={"ours": call(30e-9, 0.5e-6), "opto": call(30e-9, 60e-6)}), plots={})
    goal = next(line for line in page.splitlines() if "per traced call than opto" in line)
    assert goal.endswith("| met |")
    assert "burst 128x, sustained 128x" in goal


def test_goal_is_missed_when_the_sustained_ratio_falls_short_even_if_bursts_meet_it():
    ours = call(30e-9, 0.5e-6, sustained=5e-6)
    page = report.render(results_with(call_cost={"ours": ours, "opto": call(30e-9, 60e-6)}), plots={})
    goal = next(line for line in page.splitlines() if "per traced call than opto" in line)
    assert "**missed**" in goal


def test_events_dropped_in_the_sustained_loop_are_shown_and_explained():
    ours = call(30e-9, 0.5e-6, sustained=1e-6, dropped=1234)
    page = report.render(results_with(call_cost={"ours": ours, "opto": call(30e-9, 60e-6)}), plots={})
    row = next(line for line in page.splitlines() if line.startswith("| ours |"))
    assert row.endswith("| **1,234** |")
    assert "its cost is understated" in page


def test_goal_is_marked_missed_when_the_ratio_falls_short():
    page = report.render(results_with(call_cost={"ours": call(30e-9, 10e-6), "opto": call(30e-9, 60e-6)}), plots={})
    goal = next(line for line in page.splitlines() if "per traced call than opto" in line)
    assert "**missed**" in goal


def test_goal_without_our_figure_says_not_measured_yet():
    page = report.render(results_with(call_cost={"ours": None, "ours_error": "x", "opto": call(30e-9, 60e-6)}),
                         plots={})
    goal = next(line for line in page.splitlines() if "per traced call than opto" in line)
    assert goal.endswith("| not measured yet |")


def test_chain_sizes_opto_did_not_run_are_shown_as_capped():
    build = {"ours": [{"nodes": 1000, "build_s": 0.01, "step_s": 0.02}, {"nodes": 4000, "build_s": 0.04, "step_s": 0.08}],
             "opto": [{"nodes": 1000, "backward_s": 0.03, "problem_s": 0.01, "build_s": 0.04}]}
    page = report.render(results_with(build=build), plots={})
    row = next(line for line in page.splitlines() if line.startswith("| 4k |"))
    assert "not run (capped)" in row
    assert CAPS["build"] in page


def test_memory_extrapolation_is_labelled_as_not_run():
    memory = {"ours": {"points": [[10_000, 1 << 20], [1_000_000, 2 << 20]], "after_release_bytes": 0},
              "opto": {"points": [[10_000, 30 << 20], [100_000, 300 << 20]], "after_release_bytes": 300 << 20}}
    page = report.render(results_with(memory=memory), plots={})
    assert "(extrapolated, not run)" in page
    assert "| 1M | +2.0 MiB | not run (capped) |" in page


def test_every_figure_states_the_command_and_the_machine():
    page = report.render(results_with(), plots={})
    stamps = [line for line in page.splitlines() if line.startswith("_Reproduce: `python benchmarks/run_comparison.py`")]
    assert len(stamps) == 7  # goals + six figures
    assert all("2 cores" in s and "CPython 3.11.7" in s and "2026-11-21" in s for s in stamps)


def test_quick_run_is_flagged_on_the_page():
    results = results_with()
    results["quick"] = True
    assert "smoke run with tiny sizes" in report.render(results, plots={})


def test_loglog_slope_is_one_for_linear_growth_and_two_for_quadratic():
    assert report.loglog_slope([(1000, 1.0), (4000, 4.0), (16000, 16.0)]) == pytest.approx(1.0)
    assert report.loglog_slope([(1000, 1.0), (4000, 16.0)]) == pytest.approx(2.0)
    assert report.loglog_slope([(1000, 1.0)]) is None


def test_round_trip_outside_the_llm_subtracts_each_steps_llm_time():
    assert report.outside_llm({"round_trip_s": [0.030, 0.020], "llm_s": [0.010, 0.005]}) == pytest.approx([0.020, 0.015])


# -- the README -----------------------------------------------------------------

def test_rewrite_replaces_only_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nlead's text\n\n<!-- comparison:start -->\nold figures\n"
                      "<!-- comparison:end -->\n\nafter the section\n")
    report.rewrite_section(readme, "## new figures\n")
    assert readme.read_text() == ("# Benchmarks\n\nlead's text\n\n<!-- comparison:start -->\n## new figures\n"
                                  "<!-- comparison:end -->\n\nafter the section\n")


def test_rewrite_appends_the_markers_to_a_file_without_them(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    report.rewrite_section(readme, "figures")
    assert readme.read_text() == "# Benchmarks\n\n<!-- comparison:start -->\nfigures\n<!-- comparison:end -->\n"


def test_rewrite_refuses_a_file_with_only_one_marker_and_leaves_it_unchanged(tmp_path):
    readme = tmp_path / "README.md"
    original = "# Benchmarks\n<!-- comparison:start -->\nhand edits\n"
    readme.write_text(original)
    with pytest.raises(report.ReadmeMarkersBroken, match="fix the markers by hand"):
        report.rewrite_section(readme, "figures")
    assert readme.read_text() == original


def test_rewriting_twice_gives_the_same_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n")
    report.rewrite_section(readme, "figures v1")
    report.rewrite_section(readme, "figures v2")
    once = readme.read_text()
    report.rewrite_section(readme, "figures v2")
    assert readme.read_text() == once
    assert once.count("<!-- comparison:start -->") == 1


def test_build_runs_that_dropped_events_are_flagged_and_left_out_of_the_growth_rate():
    def row(nodes, seconds, dropped):
        return {"nodes": nodes, "build_s": seconds, "step_s": seconds,
                "tracer": {"events_sent": 3 * nodes - dropped, "dropped": dropped}}
    build = {"ours": [row(1000, 0.01, 0), row(4000, 0.04, 0), row(100_000, 0.05, 30_000)], "opto": []}
    page = report.render(results_with(build=build), plots={})
    assert "**30,000** of 300,000: the daemon's graph was incomplete" in page
    goal = next(line for line in page.splitlines() if line.startswith("| linear graph handling"))
    assert "slope 1.00 over 1k, 4k nodes" in goal


def test_flat_memory_bought_by_dropping_events_does_not_meet_the_goal():
    memory = {"ours": {"points": [[10_000, 1 << 20], [1_000_000, 2 << 20]], "after_release_bytes": 0,
                       "tracer": {"events_sent": 100, "dropped": 5_000}},
              "opto": None, "opto_error": "capped"}
    page = report.render(results_with(memory=memory), plots={})
    goal = next(line for line in page.splitlines() if line.startswith("| flat memory"))
    assert "5,000 events dropped" in goal and goal.endswith("| **missed** |")
