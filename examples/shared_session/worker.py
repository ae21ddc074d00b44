"""A worker of the shared session: it never gives feedback, it only serves.

It prints every greeting it produces until the template changes (a patch
from the learner's step reached this process), then exits.
"""
import sys
import time

import greeting

name = sys.argv[1] if len(sys.argv) > 1 else "worker"
first = greeting.render(name)
print(f"[{name}] {first}", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    current = greeting.render(name)
    if current != first:
        print(f"[{name}] {current}  (patched while running)", flush=True)
        raise SystemExit(0)
    time.sleep(0.05)
print(f"[{name}] no patch arrived within 60 s", flush=True)
raise SystemExit(1)
