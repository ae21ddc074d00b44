"""`trace-daemon`: start, stop, inspect and steer the optimizer daemon.

    trace-daemon serve                 run in the foreground (logs on stderr too)
    trace-daemon start                 start detached unless one is running
    trace-daemon stop                  stop it
    trace-daemon status [--json]       pid, uptime, sessions, processes, versions, LLM use
    trace-daemon graph SESSION [--episode N | --step N] [--format dot|graphml|json] [-o FILE]
    trace-daemon rollback SESSION [VERSION]
    trace-daemon export SESSION [--format json|diff] [--version N] [--base-dir DIR] [-o FILE]

Exit status: 0 success, 1 failure, 2 bad usage, 3 no daemon running.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from protocol.locations import LocationError, resolve
from optimizer_service.client import AdminClient, CommandFailed, DaemonNotRunning
from optimizer_service.daemon import DaemonStartError, run_daemon
from optimizer_service.graph_export import FORMATS
from optimizer_service.optimizers import OptimizerNotFound
from optimizer_service.store import StoreError

EXIT_FAILURE: Final = 1
EXIT_NOT_RUNNING: Final = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trace-daemon", description="The trace-live optimizer daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--optimizer", metavar="MODULE:FACTORY",
                       help="optimizer factory (default: OptoPrime; env TRACE_OPTIMIZER)")
    serve.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)  # log to the log file only

    start = commands.add_parser("start", help="start a detached daemon unless one is running")
    start.add_argument("--optimizer", metavar="MODULE:FACTORY", help="optimizer factory (default: OptoPrime)")
    start.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for it to answer")

    stop = commands.add_parser("stop", help="stop the running daemon")
    stop.add_argument("--timeout", type=float, default=10.0, help="seconds before it is killed")

    status = commands.add_parser("status", help="show the daemon, its sessions and LLM use")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")

    graph = commands.add_parser("graph", help="export the execution graph of a session's live episodes")
    graph.add_argument("session")
    which = graph.add_mutually_exclusive_group()
    which.add_argument("--episode", type=int, help="only live episode N (default: every live episode)")
    which.add_argument("--step", type=int, help="the feedback subgraph past step N was given (from the database)")
    graph.add_argument("--format", choices=FORMATS, default="dot")
    graph.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")

    rollback = commands.add_parser("rollback", help="make an older version current again and patch every process")
    rollback.add_argument("session")
    rollback.add_argument("version", nargs="?", type=int, help="version to restore (default: the previous one)")

    export = commands.add_parser("export", help="export a session's optimised parameters and code")
    export.add_argument("session")
    export.add_argument("--format", choices=("json", "diff"), default="json")
    export.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    export.add_argument("--version", type=int, default=None,
                        help="export this parameter version (default: the latest)")
    export.add_argument("--base-dir", type=Path, default=None,
                        help="where the original source files are (default: the paths recorded at run time)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        locations = resolve()
        return _COMMANDS[args.command](args, locations)
    except DaemonNotRunning as exc:
        print(f"trace-daemon: {exc}; start it with `trace-daemon start`", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except (LocationError, DaemonStartError, CommandFailed, StoreError, OptimizerNotFound, OSError) as exc:
        print(f"trace-daemon: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _serve(args: argparse.Namespace, locations: Any) -> int:
    return run_daemon(locations, optimizer=args.optimizer, log_to_stderr=not args.detached)


def _start(args: argparse.Namespace, locations: Any) -> int:
    from optimizer_service.lifecycle import start_daemon
    result = start_daemon(locations, timeout=args.timeout, optimizer=args.optimizer)
    verb = "started" if result.started else "already running"
    print(f"trace-daemon {verb} (pid {result.pid}) on {locations.socket}")
    return 0


def _stop(args: argparse.Namespace, locations: Any) -> int:
    from optimizer_service.lifecycle import stop_daemon
    pid = stop_daemon(locations, timeout=args.timeout)
    print(f"trace-daemon stopped (pid {pid})")
    return 0


def _status(args: argparse.Namespace, locations: Any) -> int:
    with AdminClient(str(locations.socket)) as client:
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def _graph(args: argparse.Namespace, locations: Any) -> int:
    if args.step is not None:
        text = _step_graph(locations, args.session, args.step, args.format)
    else:
        with AdminClient(str(locations.socket), timeout=60.0) as client:
            text = client.request("graph", session=args.session, episode=args.episode, format=args.format)
    _emit(text, args.output)
    return 0


def _step_graph(locations: Any, session: str, step_index: int, fmt: str) -> str:
    """The feedback subgraph step `step_index` was given, from the database (no daemon needed)."""
    import networkx as nx

    from optimizer_service.graph_export import export_graph
    from optimizer_service.store import Store
    store = Store(locations.database)
    try:
        store.session(session)  # raises UnknownSession naming the known ones
        steps = store.steps(session)
        chosen = [s for s in steps if s["step_index"] == step_index]
        if not chosen:
            raise CommandFailed(f"session {session!r} has no step {step_index} "
                                f"(steps: {', '.join(str(s['step_index']) for s in steps) or 'none'})")
        data = store.step_subgraph(chosen[-1]["id"])
    finally:
        store.close()
    if data is None:
        raise CommandFailed(f"step {step_index} of session {session!r} was too large to keep its graph")
    # JSON turned the tuple node keys into lists: make them keys again.
    for node in data["nodes"]:
        node["id"] = tuple(node["id"])
        for attr in ("producer", "parent"):
            if isinstance(node.get(attr), list):
                node[attr] = tuple(node[attr])
    for edge in data["edges"]:
        edge["source"], edge["target"] = tuple(edge["source"]), tuple(edge["target"])
    return export_graph(nx.node_link_graph(data, edges="edges"), fmt)


def _rollback(args: argparse.Namespace, locations: Any) -> int:
    with AdminClient(str(locations.socket)) as client:
        data = client.request("rollback", session=args.session, version=args.version)
    names = ", ".join(c["name"] for c in data["changes"]) or "nothing changed"
    print(f"session {args.session}: version {data['version']} restores version {data['rollback_of']} "
          f"({names}); sent to {data['processes']} running process(es)")
    return 0


def _export(args: argparse.Namespace, locations: Any) -> int:
    # Reads the database directly: works whether or not the daemon runs.
    from optimizer_service.export import ExportError, export_session
    from optimizer_service.store import Store
    store = Store(locations.database)
    try:
        text = export_session(store, args.session, args.format, version=args.version,
                              base_dir=None if args.base_dir is None else str(args.base_dir))
        if not text.strip():
            # An empty diff is not a patch (git apply refuses it): say so instead.
            print(f"trace-daemon: session {args.session!r} has no changed parameters to export", file=sys.stderr)
            return 0
        _emit(text, args.output)
    except ExportError as exc:
        print(f"trace-daemon: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        store.close()
    return 0


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text, encoding="utf-8")


_COMMANDS = {"serve": _serve, "start": _start, "stop": _stop, "status": _status, "graph": _graph,
             "rollback": _rollback, "export": _export}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _llm_line(llm: dict[str, Any]) -> str:
    text = (f"{llm.get('calls', 0)} LLM calls, {llm.get('prompt_tokens', 0) + llm.get('completion_tokens', 0)} "
            f"tokens, ${llm.get('cost_usd', 0.0):.4f}")
    if llm.get("cached_calls"):
        text += f" ({llm['cached_calls']} cached)"
    if llm.get("unpriced_calls"):
        text += f" ({llm['unpriced_calls']} calls without a known price)"
    return text


def format_status(status: dict[str, Any]) -> str:
    """The human-readable `trace-daemon status` text."""
    lines = [
        f"trace-daemon running: pid {status['pid']}, up {_duration(status['uptime_s'])}, "
        f"protocol {'.'.join(map(str, status['protocol']))}, Python {status['python']}",
        f"  socket    {status['socket']}",
        f"  database  {status['database']}",
        f"  log       {status['log']}",
        f"  LLM use   {_llm_line(status['llm'])}",
    ]
    sessions = status.get("sessions") or []
    if not sessions:
        lines.append("no sessions yet")
    for s in sessions:
        lines.append(f"session {s['name']}: version {s['version']}, {s['steps']} steps, "
                     f"{s['episodes']} episodes in memory ({s['events_in_memory']} events), "
                     f"{s['pending_feedback']} feedback pending")
        lines.append(f"  {_llm_line(s['llm'])}")
        if not s["processes"]:
            lines.append("  no process connected")
        for p in s["processes"]:
            command = " ".join(p["argv"]) or "?"
            dropped = f", {p['dropped']} dropped" if p.get("dropped") else ""
            lines.append(f"  pid {p['pid']} (client {p['client_id']}): {command} — applied version "
                         f"{p['applied_version']}, {p['events']} events{dropped}, connected {_duration(p['connected_s'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
