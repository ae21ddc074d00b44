"""Print the daemon's step records of one session (run with the project's interpreter, not traced).

    python ours_step_records.py STATE_DIR SESSION

RESULT {"steps": [{"started", "finished", "latency_s", "ok", "error",
"prompt_chars", "llm_calls"}, ...]}: `finished - started - latency_s` is
the daemon's time for a step outside the LLM.
"""
import os
import sys

from measure import emit
from optimizer_service.store import Store
from protocol.locations import DATABASE_NAME

state_dir, session = sys.argv[1], sys.argv[2]
store = Store(os.path.join(state_dir, DATABASE_NAME))
steps = [{"started": s["started"], "finished": s["finished"], "latency_s": s["latency_s"] or 0.0,
          "ok": s["ok"], "error": s["error"], "prompt_chars": len(s["prompt"] or ""),
          "llm_calls": s["llm_call_count"]}
         for s in store.steps(session)]
store.close()
emit({"steps": steps})
