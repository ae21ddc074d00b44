"""Draw the comparison's plots from the harness's results (run in the opto venv, which has matplotlib).

    python plot_figures.py RESULTS.json OUT_DIR

Writes OUT_DIR/build_time.png (feedback subgraph + problem instance time vs
chain length, log-log) and OUT_DIR/memory.png (RSS growth vs traced calls,
log x) with ours and opto's series from the same run, and prints the names
of the files it wrote, one per line. A series that was not measured is
left out and named in the legend as not measured.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; files only
import matplotlib.pyplot as plt  # noqa: E402

OURS_STYLE = {"color": "tab:blue", "marker": "o", "label": "ours (trace-live)"}
OPTO_STYLE = {"color": "tab:red", "marker": "s", "label": "opto (trace-opt)"}


def measured_build_rows(results, side):
    rows = results["figures"]["build"].get(side) or []
    return [r for r in rows if "error" not in r and r.get("build_s")]


def dropped(row):
    return int(((row.get("tracer") or {}).get("dropped")) or 0)


def build_series(results, side):
    return sorted((r["nodes"], r["build_s"]) for r in measured_build_rows(results, side) if not dropped(r))


def incomplete_build_points(results):
    """Our runs whose tracer dropped events: drawn apart, their graph was not whole."""
    return sorted((r["nodes"], r["build_s"]) for r in measured_build_rows(results, "ours") if dropped(r))


def memory_series(results, side):
    data = results["figures"]["memory"].get(side)
    if not data:
        return []
    return [(n, max(grown, 0) / 2**20) for n, grown in data["points"]]


def subtitle(results):
    m = results.get("machine") or {}
    return (f"{m.get('cores', '?')} cores, ours CPython {m.get('our_python', '?')}, "
            f"opto {results.get('opto_version') or '-'} on CPython {m.get('opto_python') or '-'}, {m.get('date', '?')}")


def plot(path, results, series_of, title, xlabel, ylabel, logy, extra=()):
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    if extra:
        xs, ys = zip(*extra)
        axes.plot(xs, ys, linestyle="none", marker="o", markerfacecolor="none", color=OURS_STYLE["color"],
                  label="ours, events dropped (graph incomplete)")
    for side, style in (("ours", OURS_STYLE), ("opto", OPTO_STYLE)):
        points = series_of(results, side)
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, **style)
        else:
            axes.plot([], [], linestyle="none", label=style["label"] + ": not measured")
    axes.set_xscale("log")
    if logy:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title + "\n" + subtitle(results), fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main():
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    plot(out / "build_time.png", results, build_series,
         "Feedback subgraph + problem instance vs chain length", "nodes in the chain", "seconds", logy=True,
         extra=incomplete_build_points(results))
    plot(out / "memory.png", results, memory_series,
         "Resident memory growth vs traced calls", "traced calls", "RSS growth (MiB)", logy=False)
    print("build_time.png")
    print("memory.png")


if __name__ == "__main__":
    main()
