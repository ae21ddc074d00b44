"""ours: one optimisation step of the pipeline, from `tracer.step()` to the patch being live.

    trace-run --target workload:normalize,workload:add_greeting,workload:count_words \
              --param workload:GREETING --session S ours_step.py driver STEPS FOLLOWERS
    trace-run ... --session S ours_step.py follower STEPS

The same pipeline as opto_step.py. The driver runs it, gives feedback on the
word count and times `tracer.step()`, which returns once the new greeting is
live in this process. Followers (other processes of the same session) run
the pipeline once, say they are ready (a file in $BENCH_SYNC_DIR), then
watch `workload.GREETING` and note when each new value arrives. The driver
makes one warm-up step first (not measured); followers join after it. Times are
`time.monotonic()`, one clock for every process of the machine.

Driver prints RESULT {"steps": [[start, end, new_value], ...], "prompt_param": ...};
a follower prints RESULT {"seen": [[time, value], ...]}.
"""
import os
import sys
import time

from measure import emit
from ours_common import require_traced, tracer_state

import tracer
import workload

ROLE = sys.argv[1]
STEPS = int(sys.argv[2])
FOLLOWERS = int(sys.argv[3]) if len(sys.argv) > 3 else 0
SYNC_DIR = os.environ.get("BENCH_SYNC_DIR", ".")
FOLLOWER_PATIENCE_S = 120.0


def pipeline(question):
    return workload.count_words(workload.add_greeting(workload.normalize(question), workload.GREETING))


def wait_for_file(name):
    path = os.path.join(SYNC_DIR, name)
    deadline = time.monotonic() + FOLLOWER_PATIENCE_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"{name} did not appear in {SYNC_DIR} within {FOLLOWER_PATIENCE_S:.0f} s")
        time.sleep(0.01)
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def wait_for_followers():
    deadline = time.monotonic() + FOLLOWER_PATIENCE_S
    while len([n for n in os.listdir(SYNC_DIR) if n.startswith("ready-")]) < FOLLOWERS:
        if time.monotonic() > deadline:
            sys.exit(f"only some of {FOLLOWERS} followers got ready within {FOLLOWER_PATIENCE_S:.0f} s")
        time.sleep(0.01)


def one_step():
    result = pipeline("  What Is The Capital Of France  ")
    tracer.feedback(result, "The answer should have exactly 5 words.")
    start = time.monotonic()
    tracer.step(timeout=120)
    return [start, time.monotonic(), workload.GREETING]


def drive():
    # Warm-up step: the daemon loads its optimizer and LLM client on the first
    # step of its life, a one-off cost; opto_step.py warms up the same way.
    warm_value = one_step()[2]
    with open(os.path.join(SYNC_DIR, "warmed.tmp"), "w", encoding="utf-8") as handle:
        handle.write(warm_value)
    os.replace(os.path.join(SYNC_DIR, "warmed.tmp"), os.path.join(SYNC_DIR, "warmed"))
    wait_for_followers()
    steps = []
    for index in range(STEPS):
        before = str(workload.GREETING)
        steps.append(one_step())
        if steps[-1][2] == before:
            sys.exit(f"step {index + 1} changed nothing (greeting stayed {before!r}): no patch to time")
    emit({"role": "driver", "steps": steps, "tracer": tracer_state(workload.add_greeting)})


def follow():
    warm_value = wait_for_file("warmed")
    deadline = time.monotonic() + FOLLOWER_PATIENCE_S
    while workload.GREETING != warm_value and time.monotonic() < deadline:
        time.sleep(0.001)  # the warm-up patch is not a measured change: wait until it is here
    pipeline("  What Is The Capital Of France  ")
    tracer.new_episode()  # flushes: the daemon knows this process and its definitions
    with open(os.path.join(SYNC_DIR, f"ready-{os.getpid()}"), "w"):
        pass
    seen, last = [], workload.GREETING
    deadline = time.monotonic() + FOLLOWER_PATIENCE_S
    while len(seen) < STEPS and time.monotonic() < deadline:
        value = workload.GREETING
        if value != last:
            seen.append([time.monotonic(), value])
            last = value
        time.sleep(0.0005)  # <= 0.5 ms late; faster polling would load the 2 cores the daemon needs
    emit({"role": "follower", "seen": seen})


require_traced(workload.normalize, workload.add_greeting, workload.count_words)
drive() if ROLE == "driver" else follow()
