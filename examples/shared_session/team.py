"""Several processes sharing one optimisation session.

    trace-run examples/shared_session/team.py

This learner starts two worker processes (they are traced too: trace-run
passes its configuration to child Python processes). Only the learner gives
feedback and steps; the new TEMPLATE reaches every process of the session,
so the workers, which never gave feedback, print the new greeting.
"""
import os
import subprocess
import sys

import tracer

import greeting

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "worker.py"), name],
                                stdout=subprocess.PIPE, text=True)
               for name in ("Ada", "Linus")]
    # Wait until each worker has produced its first greeting (it is connected).
    for worker in workers:
        print(worker.stdout.readline(), end="")
    output = greeting.render("Grace")
    print(f"[learner] {output}")
    tracer.feedback(output, "Greetings must be polite and complete: start with 'Hello' and end with '!'.")
    print(f"[learner] step: {tracer.step()}")
    print(f"[learner] {greeting.render('Grace')}")
    status = 0
    for worker in workers:
        rest, _ = worker.communicate(timeout=90)
        print(rest, end="")
        status |= worker.returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
