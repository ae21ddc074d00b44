"""The optimizer daemon: sessions, execution DAGs, OptoPrime, LLM calls, patches.

One room per concern:

    cli.py          `trace-daemon` / `python -m optimizer_service` commands
    daemon.py       run the daemon in this process (lock, stale socket, status file, signals)
    lifecycle.py    start/stop a daemon from another process (spawn lock, Popen)
    client.py       blocking control connection used by the commands
    server.py       asyncio server: handshake, peer uid check, message dispatch, admin requests
    sessions.py     sessions, their processes and episodes; steps serialised per session; broadcast
    steps.py        one step on a worker thread: graph, feedback cut, StepInput, optimizer, commit
    graph.py        the DAG from trace events; the linear feedback cut
    graph_export.py DOT / GraphML / JSON text of a graph
    store.py        SQLite (WAL) persistence: versions, feedback, memory, steps
    optimizers.py   which Optimizer a session uses (OptoPrime, or TRACE_OPTIMIZER)
    in_process.py   the same service in a thread of a traced process (trace-run --in-process)

Owned elsewhere: optoprime/ and llm/ (the optimizer and its LLM providers),
export.py, step_types.py and migrations.py (shared contracts).
"""
