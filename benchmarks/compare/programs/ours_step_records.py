"""Print the daemon's step records of one session (run with the project's interpreter, not traced).

    python ours_step_records.py STATE_DIR SESSION

RESULT {"steps": [{"step_s", "llm_s", "ok", "error", "prompt_chars",
"llm_calls"}, ...]}: `step_s` is the daemon's whole step (from its start to
the result, before the commit), `llm_s` the time its LLM requests took as
the LLM layer measured them; `step_s - llm_s` is the step outside the LLM.
"""
import os
import sys

from measure import emit
from optimizer_service.store import Store
from protocol.locations import DATABASE_NAME

state_dir, session = sys.argv[1], sys.argv[2]
store = Store(os.path.join(state_dir, DATABASE_NAME))
steps = [{"step_s": s["finished"] - s["started"],
          "llm_s": sum(float(call.get("latency_s") or 0.0) for call in s["llm_calls"] or []),
          "ok": s["ok"], "error": s["error"], "prompt_chars": len(s["prompt"] or ""),
          "llm_calls": s["llm_call_count"]}
         for s in store.steps(session)]
store.close()
emit({"steps": steps})
