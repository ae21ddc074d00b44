"""Tracer runtime throughput: records -> resolver -> frames -> socket, against a sink daemon.

Prints ratios against baselines measured in the same run:
- traced loop with the runtime connected vs the same loop untraced (the traced
  loop includes the time back-pressure holds the program while the flusher
  converts: with no drops, the loop runs at the flusher's pace),
- end to end events/s (first traced call until everything is on the socket) vs
  packing as many small call/ret events with msgpack alone (best of 3)  [goal >= 30%].

    python benchmarks/bench_runtime.py [calls]     # default 200000
"""
import os, socket, subprocess, sys, tempfile, textwrap, time

SINK = textwrap.dedent('''
    import os, socket, sys
    from protocol import messages as m
    from protocol.constants import PROTOCOL_VERSION
    from protocol.framing import FrameDecoder, encode_message
    path = sys.argv[1]
    srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept(); dec = FrameDecoder(); welcomed = False
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk: break
        if not welcomed:
            list(dec.feed(chunk))
            conn.sendall(encode_message(m.Welcome(protocol=PROTOCOL_VERSION, daemon_pid=os.getpid(), client_id=1, session="b", version=0)))
            welcomed = True
''')

PROGRAM = textwrap.dedent('''
    import sys, time
    t = time.perf_counter()
    from tracer import runtime, marking, hooks
    imported = time.perf_counter() - t
    N = int(sys.argv[1])
    t = time.perf_counter()
    runtime.start(runtime.RuntimeConfig(session="b", autostart=False, socket_path=sys.argv[2]))
    started = time.perf_counter() - t
    print(f"import tracer.runtime {imported*1e3:.1f} ms, start() connected {started*1e3:.1f} ms")
    assert runtime.is_connected()
    @marking.bundle()
    def work(x):
        return x * 2.5
    def loop():
        t = time.perf_counter()
        for i in range(N):
            work(i)
        return time.perf_counter() - t
    hooks.disable(); loop(); plain = loop(); hooks.enable()
    t0 = time.perf_counter()
    traced = loop()
    assert runtime.flush(60)
    total = time.perf_counter() - t0
    s = runtime.stats()
    # baseline: pack the same number of events with msgpack alone
    import msgpack
    events = [["call", i, 123456789, None, [["x", i]], 1, 0] for i in range(s.events_sent // 2)] + \\
             [["ret", i, i + 1, 0] for i in range(s.events_sent // 2)]
    pack = float("inf")
    for _ in range(3):
        t = time.perf_counter(); msgpack.packb(events); pack = min(pack, time.perf_counter() - t)
    print(f"calls={N} events_sent={s.events_sent} dropped={s.dropped} MB_sent={s.bytes_sent/1e6:.1f}")
    print(f"loop untraced {plain*1e3:.1f} ms, traced {traced*1e3:.1f} ms: {traced/plain:.1f}x")
    print(f"record->socket total {total:.2f} s: {s.events_sent/total/1e3:.0f} k events/s end to end")
    print(f"msgpack alone {s.events_sent/pack/1e3:.0f} k events/s: end to end is {pack/total*100:.1f}% of pack speed")
''')

def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    d = tempfile.mkdtemp(prefix="tlb-")
    path = os.path.join(d, "s.sock")
    sink = subprocess.Popen([sys.executable, "-c", SINK, path], stdout=subprocess.PIPE, text=True)
    sink.stdout.readline()
    prog = os.path.join(d, "prog.py")
    open(prog, "w").write(PROGRAM)
    out = subprocess.run([sys.executable, prog, str(n), path], capture_output=True, text=True)
    print(out.stdout + out.stderr)
    sink.kill()

main()
