"""Daemon benchmarks: sustained ingest, and the feedback cut on long chains.

    python benchmarks/bench_daemon.py            # both parts
    python benchmarks/bench_daemon.py ingest     # one part: ingest | chain

1. Ingest. Baseline: how many events one process encodes per second alone
   (`encode_message` of EventBatch frames, in this process). Then a real
   daemon (`python -m optimizer_service serve`, temporary socket and state
   dir) takes frames from 4 client processes at once, each sending frames it
   encoded beforehand as fast as the socket takes them (a tracer encodes on
   its own flusher thread; on a 2-core machine four encoders would otherwise
   measure CPU contention, not the daemon); every client then asks for status, and the
   daemon's per-process event counts must equal what was sent (nothing
   lost). Target: aggregate ingest >= 0.5 x the one-process encode rate.

2. Feedback cut on linear chains of N operations (N value nodes like opto's
   chain benchmark, plus N op nodes): build the graph from events, cut the
   feedback subgraph from the last output, then build OptoPrime's problem
   instance and prompt (`optoprime.analyse` + `render_prompt`). Growth must
   be linear: time per node should stay flat from 1k to 100k. Reference:
   opto 0.1.3.8 needs ~1.8 s for backward + prompt on a 4k chain; the target
   is >= 30x faster.

Figures are printed as ratios against baselines measured in the same run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protocol import encode_message  # noqa: E402
from protocol import messages as m  # noqa: E402

CLIENTS = 4
BATCH_CALLS = 333                 # 3 events per call: ~1000 events per frame
FRAMES_PER_CLIENT = 400       # ~400k events per client
OPTO_4K_SECONDS = 1.8


def make_batch(start: int, episode: int) -> m.EventBatch:
    events = []
    for i in range(start, start + BATCH_CALLS):
        events.append(["v", 2 * i, {"t": "str", "id": 140000000 + i, "v": f"value {i}"}])
        events.append(["call", i, 77, None, [["q", 2 * i]], 1, 1000 + i])
        events.append(["ret", i, 2 * i + 1, 2000 + i])
    return m.EventBatch(episode=episode, events=events)


def encode_rate(seconds: float = 2.0) -> float:
    """Events per second one process encodes alone."""
    count, start, episode = 0, time.perf_counter(), 1
    while time.perf_counter() - start < seconds:
        batch = make_batch(count, episode)
        encode_message(batch)
        count += len(batch.events)
    return count / (time.perf_counter() - start)


CLIENT = r"""
import json, socket, sys, time
sys.path.insert(0, sys.argv[4])
from protocol import FrameDecoder, client_hello, encode_message, messages as m
from benchmarks.bench_daemon import make_batch
path, go, frames = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_UNIX); s.connect(path)
s.sendall(encode_message(client_hello("bench", client_name="bench")))
dec = FrameDecoder()
welcome = next(iter(dec.feed(s.recv(65536))))
# Encode first (a tracer does this on its flusher thread): the figure is the
# daemon's ingest, not four encoders fighting it for two cores.
payload, sent, episode = [], 0, 1
for i in range(frames):
    batch = make_batch(sent, episode)
    payload.append(encode_message(batch))
    sent += len(batch.events)
    if i % 20 == 19:
        episode += 1
while time.time() < go:
    time.sleep(0.001)
for frame in payload:
    s.sendall(frame)
s.sendall(encode_message(m.StatusQuery(request_id=1)))
buf = []
while not buf:
    buf.extend(dec.feed(s.recv(1 << 20)))
done = time.time()
print(json.dumps({"client_id": welcome.client_id, "sent": sent, "done": done, "status": buf[0].status}))
"""


def bench_ingest() -> None:
    print("== ingest: 4 client processes -> one daemon")
    baseline = encode_rate()
    print(f"one process encoding alone: {baseline:,.0f} events/s")
    root = tempfile.mkdtemp(prefix="bd-", dir="/tmp")
    env = dict(os.environ, TRACE_DAEMON_SOCKET=f"{root}/d.sock", TRACE_STATE_DIR=f"{root}/state",
               PYTHONPATH=str(REPO))
    daemon = subprocess.Popen([sys.executable, "-m", "optimizer_service", "serve", "--detached"], env=env,
                              cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        _wait_for_socket(f"{root}/d.sock")
        go = time.time() + 8.0  # time enough for every client to encode its frames
        clients = [subprocess.Popen([sys.executable, "-c", CLIENT, f"{root}/d.sock", str(go),
                                     str(FRAMES_PER_CLIENT), str(REPO)], env=env, cwd=REPO,
                                    stdout=subprocess.PIPE, text=True) for _ in range(CLIENTS)]
        results = [json.loads(c.communicate(timeout=120)[0]) for c in clients]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    sent = sum(r["sent"] for r in results)
    elapsed = max(r["done"] for r in results) - go
    # Each client's status reply (sent after its last frame) counts what the
    # daemon received from it: it must be everything it sent.
    lost = 0
    for r in results:
        mine = [p for p in r["status"]["sessions"][0]["processes"] if p["client_id"] == r["client_id"]]
        lost += r["sent"] - (mine[0]["events"] if mine else 0)
    rate = sent / elapsed
    print(f"daemon ingest from {CLIENTS} processes: {rate:,.0f} events/s ({sent:,} events in {elapsed:.2f} s), "
          f"lost: {lost}")
    print(f"ratio to one-process encoding: {rate / baseline:.2f} (target >= 0.50) "
          f"{'OK' if rate / baseline >= 0.5 and lost == 0 else 'BELOW TARGET'}")


def _wait_for_socket(path: str) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise SystemExit("daemon did not start")


def chain_events(n: int) -> list[list]:
    events = [["v", 0, {"t": "str", "id": 1, "v": "Answer briefly."}], ["param", 0, "prompt"]]
    for i in range(1, n + 1):
        events.append(["call", i, 77, None, [["x", i - 1]], 1, i])
        events.append(["v", i, {"t": "str", "id": 100 + i, "v": f"step {i}"}])
        events.append(["ret", i, i, i])
    return events


def bench_chain() -> None:
    from optimizer_service.graph import GraphBuilder, feedback_subgraph
    from optimizer_service.step_types import FeedbackItem, ParamState, StepInput
    try:
        from optimizer_service.optoprime import analyse, render_prompt
        from optimizer_service.optoprime.optimizer import DEFAULT_TOKEN_BUDGET
    except ImportError:
        analyse = None
    # Measure under the daemon's own GC settings: that is where steps run.
    from optimizer_service.daemon import _tune_gc
    _tune_gc()
    print("== feedback cut + problem instance on linear chains (daemon GC settings)")
    functions = {77: {"id": 77, "module": "app", "qualname": "transform", "source": "def transform(x): ...",
                      "doc": None, "signature": "(x)", "file": "app.py", "line": 1, "trainable": False}}
    print(f"{'nodes':>7} {'build':>9} {'cut':>9} {'instance':>9} {'total':>9} {'daemon us/node':>15} {'total us/node':>14}")
    daemon_per_node, total_per_node, totals = {}, {}, {}
    for n in (1000, 4000, 16000, 100000):
        events = chain_events(n)
        t0 = time.perf_counter()
        builder = GraphBuilder(functions)
        builder.add_events(1, 1, events)
        t1 = time.perf_counter()
        sub = feedback_subgraph(builder.graph, [("v", 1, n)], in_place=True)
        t2 = time.perf_counter()
        if analyse is not None:
            problem = StepInput(session="bench", step_index=0, graph=sub,
                                feedback=[FeedbackItem(node=("v", 1, n), text="wrong", client=1, episode=1)],
                                params={"prompt": ParamState(name="prompt", type="str", value="Answer briefly.")})
            render_prompt(analyse(problem), objective="", memory=[], token_budget=DEFAULT_TOKEN_BUDGET)
        t3 = time.perf_counter()
        assert sub.number_of_nodes() == 2 * n + 1
        daemon_per_node[n] = (t2 - t0) / n * 1e6
        total_per_node[n] = (t3 - t0) / n * 1e6
        totals[n] = (t2 - t0, t3 - t0)
        print(f"{n:>7} {1e3 * (t1 - t0):>7.1f}ms {1e3 * (t2 - t1):>7.1f}ms {1e3 * (t3 - t2):>7.1f}ms "
              f"{1e3 * (t3 - t0):>7.1f}ms {daemon_per_node[n]:>15.2f} {total_per_node[n]:>14.2f}")
    print(f"growth, time per node at 100k / at 1k: daemon (build + cut) {daemon_per_node[100000] / daemon_per_node[1000]:.2f}, "
          f"with problem instance {total_per_node[100000] / total_per_node[1000]:.2f} (linear: ~1)")
    daemon_4k, total_4k = totals[4000]
    print(f"4k chain vs opto's 1.8 s (target >= 30x): build + cut {1e3 * daemon_4k:.1f} ms = "
          f"{OPTO_4K_SECONDS / daemon_4k:.0f}x; with problem instance {1e3 * total_4k:.1f} ms = "
          f"{OPTO_4K_SECONDS / total_4k:.0f}x" + ("" if analyse is not None else " [optoprime missing]"))


if __name__ == "__main__":
    parts = sys.argv[1:] or ["ingest", "chain"]
    for part in parts:
        {"ingest": bench_ingest, "chain": bench_chain}[part]()
